"""Every limit on what arrives from outside, in one place (the README's Safety section repeats them).

A size that comes from a file, an upload or a request is checked against these before anything is
built or allocated from it.
"""

from __future__ import annotations

# -- uploaded images ------------------------------------------------------------------------------
# 25 MP is a 5000 x 5000 photo: far more than any model here needs, far less than a decompression
# bomb (PNG headers can declare 10^10 pixels).
MAX_IMAGE_PIXELS = 25_000_000  # pixels of an uploaded or training image (a larger header is a bomb)
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # an uploaded image file
DEFAULT_MAX_UPLOAD_MB = 200  # per uploaded file (checkpoints too); --max-upload-mb changes it

# -- the explorer's caches ------------------------------------------------------------------------
MAX_MODELS_IN_MEMORY = 4  # loaded checkpoints kept (LRU); models handed to vs.explore are kept as well
MAX_MAP_POINTS = 70_000  # evaluation images encoded per model (a seeded subset above this)
MAX_FIT_POINTS = 50_000  # a t-SNE / UMAP map of more points is fitted on a seeded subset of this many; the rest are placed by its transform
MAX_DRAWN_POINTS = 200_000  # points of one map sent to the browser; above, a density-aware subset (sparse areas and every ringed point kept)
MAX_PROJECTIONS_IN_MEMORY = 16  # fitted maps kept in memory (LRU)
MAX_PROJECTION_FILES = 256  # fitted maps kept in the disk cache, oldest dropped first
MAX_PROJECTION_BYTES = 1 << 30  # ... and their total size on disk
MAX_MAP_FILE_BYTES = 32 << 20  # a checkpoint's maps sidecar (NAME.maps.npz: fitted t-SNE / UMAP coordinates)
MAX_MODELS_KNOWN = 256  # evicted checkpoints remembered for reloading (their path and name only)
MAX_EVAL_DATA_BYTES = 1 << 30  # an image folder a model's dataset block names, decoded at the model's size

# -- embeddings files (latent-explore --embeddings, vs.explore(latents=...)) ------------------------
MAX_EMBEDDING_FILE_BYTES = 2 << 30  # one .npz / .parquet embeddings file
MAX_EMBEDDING_POINTS = 2_000_000  # rows read; the map holds every one of them (MAX_EMBEDDING_MAP_POINTS)
MAX_EMBEDDING_MAP_POINTS = 2_000_000  # points of an embeddings map: every row read up to this, a seeded subset above
MAX_EMBEDDING_DIM = 8192  # a CLIP ViT-L code is 768, a VAE's 2-512
MAX_EMBEDDING_VALUES = 100_000_000  # points x dims (400 MB of float32)
MAX_EMBEDDING_IMAGE_SIDE = 256  # thumbnails, not photographs
MAX_EMBEDDING_IMAGE_BYTES = 1 << 30  # all thumbnails together, as uint8, and as the file declares them
MAX_EMBEDDING_BYTES = 512 << 20  # the codes as the file declares them (float64 counts 8 bytes a value: save float32 for more)
MAX_EMBEDDING_LABEL_BYTES = 256 << 20  # labels, and class names, as the file declares them (strings at full width)
MAX_EMBEDDING_LABEL_CHARS = 256  # one string label or class name (as MAX_CLASS_NAME_CHARS)
MAX_EMBEDDING_MEMBERS = 64  # zip entries of one .npz (np.savez writes one per array)
MAX_EMBEDDING_META_BYTES = 4 << 20  # a .parquet footer (schema, row groups) or an .npz zip directory
MAX_EMBEDDING_FILE_ROWS = 20_000_000  # rows a file may have: above MAX_EMBEDDING_POINTS, a seeded subset of that many is read, block by block

# -- embedded evaluation samples and ONNX bundles ----------------------------------------------------
MAX_SAMPLE_IMAGES = 20_000  # images a checkpoint or bundle may carry for its map
MAX_SAMPLE_BYTES = 64 << 20  # ... as uint8, at most 64 MiB
MAX_SAMPLE_SIDE = 256  # px a side
MAX_GRAPH_BYTES = 512 << 20  # one ONNX graph (its weights inside it)
MAX_BUNDLE_META_BYTES = 16 << 20  # the bundle's JSON (history included)
GRAPH_RUN_SECONDS = 10.0  # wall-clock budget of one run of a bundle's graph; a longer one is stopped
MAX_GRAPH_RUN_VALUES = 1 << 26  # values one run of a bundle's graph may give (256 MiB of float32); larger batches run in parts

# -- checkpoints and resume states (training/checkpoint.py, training/train_state.py) ---------------
# A file is checked against these before anything is built or allocated from it: the header is read
# with a size cap, the metadata is parsed with a depth cap, the model is first built on the "meta"
# device (no memory) to count its parameters, and every tensor's declared shape, dtype and byte size
# is compared with what the config needs before any tensor is read. So a file of a few hundred
# bytes can cost at most a few megabytes, and a file's real cost is bounded by MAX_PARAMETERS.
MAX_CHECKPOINT_BYTES = 1 << 30  # whole file; a model at MAX_PARAMETERS plus Adam's state stays below
MAX_HEADER_BYTES = 4 << 20  # safetensors' JSON header; 150 epochs of history take 42 KB
MAX_JSON_DEPTH = 8  # nesting of the metadata JSON; latent-train writes 5 levels
MAX_JSON_ITEMS = 10_000  # entries of any one list or object in the metadata
MAX_STRING_CHARS = 4096  # any string in the metadata (a folder: dataset's path is the longest)
MAX_TENSORS = 1024  # tensors in one file: a model has about 20, a resume state 4 per parameter
MAX_TENSOR_RANK = 8  # dimensions of any one tensor
MAX_PARAMETERS = 50_000_000  # 200 MB as float32; the largest shipped model has 1.8 M
MAX_LATENT_DIM = 1024  # the code's size
MAX_HIDDEN_DIM = 4096  # an MLP's width
MAX_BASE_CHANNELS = 256  # the conv nets cap their width at 256 channels anyway
MAX_IMAGE_SIDE = 256  # model image height / width; latent-train's folder datasets go up to 128
MAX_CLASSES = 1000  # class names, and the classes or mixture components a model is conditioned on
MAX_CLASS_NAME_CHARS = 256  # a folder: dataset's class names are folder names (at most 255 bytes)
MAX_HISTORY_EPOCHS = 5000  # per-epoch history records, and so the most epochs one run may train

# -- latent-train's flags and config file (training/config.py, training/cli.py) -------------------
# Past these a run is absurd rather than ambitious; each refusal is one argparse-style line.
MAX_EPOCHS = MAX_HISTORY_EPOCHS  # --epochs
MAX_BATCH_SIZE = 65_536  # --batch-size
MAX_EVAL_K = 5000  # IWAE importance samples; the decoder runs on all k of one image at once
MAX_NLL_IMAGES = 1_000_000  # --nll-images
MAX_SEED = 2**32 - 1  # numpy's seeds stop here
MAX_LR = 10.0  # --lr (and above 0)
MAX_WEIGHT = 10_000.0  # beta and any other loss weight
TEMPERATURE_RANGE = (1e-3, 100.0)  # Gumbel-softmax temperatures; below 1e-3 the relaxation gives NaN
GAUSSIAN_C_RANGE = (1e-6, 1e6)  # variance of the Gaussian likelihood
MAX_OPTION_MAGNITUDE = 1_000_000  # any number among a family's options (the parameter count bounds them further)
MAX_CONFIG_BYTES = 1 << 20  # a --config JSON file

# -- what a checkpoint carries besides the model (training/embedded.py) ----------------------------
# The embedded evaluation sample (sample.images / sample.labels / sample.factors) is bounded by
# MAX_SAMPLE_IMAGES, MAX_SAMPLE_BYTES and MAX_SAMPLE_SIDE above, like a bundle's. The training
# record is record.codes [E, N, D] float16, one frame per recorded moment of training; latent-train's
# default (2,000 points, <= ~100 epoch frames) stays far below: 20 epochs of 2,000 16-d codes are 24
# frames, 1.5 MB.
MAX_SAMPLE_FACTORS = 64  # ground-truth factors per sample image (shapes have 5, waveforms 4)
MAX_RECORD_FRAMES = 1024  # recorded moments of training (E) in one checkpoint or resume state
MAX_RECORD_POINTS = 20_000  # test images whose codes are recorded (N)
MAX_RECORD_BYTES = 64 << 20  # the recorded codes, as float16 (E x N x D x 2 bytes)

# -- request values from the page (explorer/core/values.py) ----------------------------------------
# Every number a request carries is parsed in one place: NaN, infinities, overflowing integers and
# text that is not a number are refused with one sentence before any handler uses the value.
MAX_MAP_COORDINATE = 1e6  # a clicked map spot (a projection's coordinates stay far inside)


# -- the map as an instrument (explorer/core/neighbours.py, selection.py, manifold.py) -------------
MAX_NEIGHBOURS = 100  # nearest neighbours listed for one point
MAX_SEARCH_CHARS = 200  # one search or filter typed on the map
MAX_MANIFOLD_STEPS = 20  # cells a side of the decoded manifold grid (400 decodes at most)
MAX_SELECTION = 70_000  # points in one lasso or box selection sent by the page (a map shows at most MAX_MAP_POINTS)

# -- decoding in the page (explorer/core/webdecoder.py, ui/webdecode.py) ---------------------------
# The decoder is exported to ONNX and sent to the browser, which decodes under the pointer and the
# sliders itself; past these the server decodes instead and the page says why.
MAX_WEB_DECODER_BYTES = 16 << 20  # one exported decoder graph sent to the page (the shipped 28x28 conv decoders are 2.5-3.2 MiB)
MAX_WEB_EXPORT_PARAMETERS = 16_000_000  # a model's parameters, checked before its decoder is exported for the page
MAX_WEB_DECODERS = 8  # exported decoders kept in memory (LRU)

def table() -> str:
    """The README's limits table, read from this file: one row per limit, under its section."""
    import inspect
    import re
    import sys

    rows = ["| limit | value | what it bounds |", "|---|---|---|"]
    module = sys.modules[__name__]
    for line in inspect.getsource(module).splitlines():
        section = re.match(r"# -- (.+?) -+$", line)
        if section:
            rows.append(f"| **{section.group(1)}** | | |")
            continue
        found = re.match(r"([A-Z][A-Z0-9_]+) = [^#]+?(?:  # (.*))?$", line)
        if found:
            name, note = found.group(1), (found.group(2) or "").replace("|", "\\|")
            rows.append(f"| `{name}` | {_shown(name, getattr(module, name))} | {note} |")
    return "\n".join(rows)


def _shown(name: str, value: object) -> str:
    """A limit's value for people: bytes in KiB / MiB / GiB, big numbers with separators."""
    if isinstance(value, tuple):
        return " to ".join(_shown(name, v) for v in value)
    if name.endswith("_BYTES") and isinstance(value, int) and value >= 1024:
        for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size:
                return f"{value / size:g} {unit}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return f"{value:g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    print(table())
