"""ate.data: episodes from the formats users bring, normalisation, and fixed-length action chunks.

    eps = load_episodes("demos/")                        # HDF5 / ate_vae / zarr / LeRobot / npz / npy
    norm = Normalizer.fit(eps, mode="minmax")           # streaming stats, [-1, 1]
    ds = ChunkDataset(eps, horizon=16, normalizer=norm, pad="repeat")
    ds[0]["action"].shape  # (16, D)

`ActionSpace` (`ate.data.action_space`) is the record of that space (robot, D, H, pad rule, normaliser) that
every VAE and policy directory holds as action_space.json, compared by `ate.data.action_space.compare`.
"""

from ate.data.action_space import ActionSpace
from ate.data.chunks import ChunkDataset, check_aligned, split_episodes
from ate.data.episodes import EpisodeSet
from ate.data.formats import FORMATS, detect_format
from ate.data.formats.numpy_files import save_npy
from ate.data.lazy import LazyArray
from ate.data.loading import load_episodes
from ate.data.normalize import Normalizer
from ate.data.validate import validate_episodes

__all__ = [
    "FORMATS",
    "ActionSpace",
    "ChunkDataset",
    "EpisodeSet",
    "LazyArray",
    "Normalizer",
    "check_aligned",
    "detect_format",
    "load_episodes",
    "save_npy",
    "split_episodes",
    "validate_episodes",
]
