"""``regard eval``: measure Regard's accuracy and per-group error rates on a dataset, and report.

Regard publishes the measured error rates of its bundled models, overall and per demographic
group; this package is how they are measured, so that anyone can re-measure them on their own data
with the same rules. Computation (``stats``, ``verification``, ``detection``, ``identification``,
``groups``) is kept apart from the model work (``embeddings``: one process pool, cached) and from
the rendering (``render``, ``svg``); ``runner`` ties them together.

Dataset layouts (``regard eval`` takes any of them; paths in files are relative to the folder)
-------------------------------------------------------------------------------------------------

1. **Verification** (``--verification DIR``), LFW-style:
   ``pairs.csv`` with columns ``image1, image2, same_identity`` (1/0), optional ``fold``,
   optional ``identity1, identity2``, and optional group columns in pairs such as
   ``gender1, gender2``; or LFW's View-2 ``pairs.txt`` (header ``<folds> <n>``, then per fold
   n lines ``name i j`` and n lines ``name1 i name2 j``; images at
   ``[images/]<name>/<name>_<iiii>.jpg``). ``pairs.csv`` wins when both exist. Identities, used
   for the cross-identity pairs and the derived gallery, come from ``identity1/2``, the names in
   ``pairs.txt``, or else each image's parent folder name (checked against the pair labels).
2. **Detection** (``--detection DIR``), WIDER-style: ``faces.csv``, one row per ground-truth box
   (``image, x, y, w, h`` in pixels, optional ``invalid``, ``in_easy/in_medium/in_hard``, and any
   other columns as groups, e.g. ``perceived_gender``, ``perceived_skin``: Fitzpatrick types are
   binned I-III / IV-VI); or the official ``wider_face_val_bbx_gt.txt`` (image paths relative to
   ``images/``). ``faces.csv`` wins when both exist.
3. **Labelled faces** (``--labels DIR``): ``labels.csv`` with ``image``, optional ``identity``,
   optional ``age`` (years) and group columns (by default every other column with 2-20 values,
   except ``*_code`` and ``age_bucket``), e.g. ``gender, race``. Impostor pairs are the
   cross-identity pairs within each group cell (every pair of different images when there is no
   ``identity`` column, as for UTKFace). Images below ``--min-age`` (default 18) are reported
   apart: children are out of scope for this model, and the calibration excludes them.
4. **Identification** (``--gallery DIR``): ``gallery/<identity>/*`` images; the first image of each
   identity in which a face is found is enrolled, the others are mated probes. Without a gallery,
   one is derived from the verification set: identities with >= 2 images (first enrolled, others
   mated probes), identities with one image as non-mated probes.

``--data DIR`` finds the parts under a dev-data root (``verification/lfw``,
``detection/wider_face_val``, ``demographics/utkface``, ``identification/bbt_faceapi``) or takes
the folder itself when it is one layout; explicit part options override what it finds.

Measures
--------
Every rate carries its count and a 95 % Wilson interval (``stats.Rate``); a zero rate is stated as
"0 of n" with its upper bound. Verification: TAR/FNMR and FMR at calibrated similarity 50, 80, 90,
95, 99 (FMR also over every cross-identity pair of the images, for resolution below 1/pairs),
cross-validated accuracy, ROC/DET and error rates against the threshold, TAR/FMR by group.
Detection: recall at IoU >= 0.5 overall, by face height, by WIDER difficulty and by group;
unmatched detections; the 100-face cap. Identification: rank-1, FNIR and FPIR. Groups: impostor
FMR per group cell and the largest ratio between groups at similarity 80 and 50.

Model results per image are cached with ``--cache DIR`` (``embeddings``); the cache holds face
templates of the evaluated people, so keep it out of the repository.

Python use::

    from regard.evaluation import EvalConfig, run, write_reports
    report = run(EvalConfig.from_paths(Path("/data/dev"), limit=300))
    write_reports(report, Path("eval-report"))
"""

from regard.evaluation.layouts import discover
from regard.evaluation.render import summary_lines, write_reports
from regard.evaluation.runner import EvalConfig, run
from regard.evaluation.stats import Rate, largest_ratio, wilson_interval

__all__ = ["EvalConfig", "Rate", "discover", "largest_ratio", "run", "summary_lines",
           "wilson_interval", "write_reports"]
