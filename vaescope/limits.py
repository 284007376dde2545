"""Every limit on what arrives from outside, in one place (the README's Safety section repeats them).

A size that comes from a file, an upload or a request is checked against these before anything is
built or allocated from it.
"""

from __future__ import annotations

# -- uploaded images ------------------------------------------------------------------------------
# 25 MP is a 5000 x 5000 photo: far more than any model here needs, far less than a decompression
# bomb (PNG headers can declare 10^10 pixels).
MAX_IMAGE_PIXELS = 25_000_000
MAX_IMAGE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_UPLOAD_MB = 200  # per uploaded file (checkpoints too); --max-upload-mb changes it

# -- the explorer's caches ------------------------------------------------------------------------
MAX_MODELS_IN_MEMORY = 4  # loaded checkpoints kept (LRU); models handed to vs.explore are kept as well
MAX_MAP_POINTS = 70_000  # evaluation images encoded per model (a seeded subset above this)
MAX_PROJECTIONS_IN_MEMORY = 16
MAX_PROJECTION_FILES = 256  # fitted maps kept in the disk cache, oldest dropped first
MAX_PROJECTION_BYTES = 1 << 30  # ... and at most 1 GiB of them
MAX_MODELS_KNOWN = 256  # evicted checkpoints remembered for reloading (their path and name only)

# -- embeddings files (latent-explore --embeddings, vs.explore(latents=...)) ------------------------
MAX_EMBEDDING_FILE_BYTES = 2 << 30  # 2 GiB
MAX_EMBEDDING_POINTS = 2_000_000  # rows read; the map shows a seeded subset of MAX_MAP_POINTS
MAX_EMBEDDING_DIM = 8192  # a CLIP ViT-L code is 768, a VAE's 2-512
MAX_EMBEDDING_VALUES = 100_000_000  # points x dims (400 MB of float32)
MAX_EMBEDDING_IMAGE_SIDE = 256  # thumbnails, not photographs
MAX_EMBEDDING_IMAGE_BYTES = 1 << 30  # all thumbnails together, as uint8

# -- embedded evaluation samples and ONNX bundles ----------------------------------------------------
MAX_SAMPLE_IMAGES = 20_000  # images a checkpoint or bundle may carry for its map
MAX_SAMPLE_BYTES = 64 << 20  # ... as uint8, at most 64 MiB
MAX_SAMPLE_SIDE = 256  # px a side
MAX_GRAPH_BYTES = 512 << 20  # one ONNX graph (its weights inside it)
MAX_BUNDLE_META_BYTES = 16 << 20  # the bundle's JSON (history included)
