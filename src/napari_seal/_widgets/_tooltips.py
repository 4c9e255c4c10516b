"""UI strings shared by the widgets and the docs (one place, as micro-sam does)."""

LOAD_SLIDE = (
    "A whole-slide H&E image: SVS, pyramidal TIFF, OME-TIFF, NDPI or a large JPEG/PNG."
)
LOAD_ST = (
    "The ST sample: a HEST sample folder, a Space Ranger output folder or an .h5ad "
    "with obsm['spatial'] (level-0 pixel coordinates)."
)
LOAD_MPP = (
    "Micrometres per level-0 pixel. 0 = read from the slide, "
    "or estimate from the spot grid."
)
LOAD_BUNDLED = (
    "Open the bundled her2st section (HER2+ breast cancer, legacy ST, CC BY 4.0)."
)
EMBED_ENCODER = "Encoder from the registry; gated models need a local weights file."
EMBED_RUN = (
    "A SEAL run directory (from Fine-tune or `napari-seal train`) "
    "replaces the encoder."
)
EMBED_STORE = (
    "Zarr store for the embeddings; empty = the workspace store of this slide and "
    "model (never beside the slide). An interrupted run resumes where it stopped."
)
EXPR_GENE = (
    "Type a gene of the panel; the overlay switches without recomputing embeddings."
)
QUERY_GENES = (
    "One gene, several (ERBB2,GRB7) or a weighted signature (ERBB2:1,ESR1:-1)."
)
QUERY_ROUTE = (
    "decoder: the image->gene head's predicted expression of the query genes; "
    "omics: similarity in SEAL's shared space to the run's training spots high in the "
    "query. The default did better on held-out her2st sections (docs/queries.md)."
)
FT_PRESET = (
    "cpu: a few minutes on ~1k spots; paper/24GB/80GB: GPU presets (SEAL settings)."
)
FT_RESUME = "Continue the run in the output folder from its last checkpoint."
EXPR_UNCERTAINTY = (
    "Reliability map: the spread (SD, in training z-scores) of the gene among the 64 "
    "training spots nearest each tile in SEAL's shared space. Bright = the look-alikes "
    "disagree: trust the prediction less there. Needs a run with a reference bank."
)
EXPR_HIDE = (
    "Blank the tiles whose uncertainty is above the threshold (in training SDs)."
)
