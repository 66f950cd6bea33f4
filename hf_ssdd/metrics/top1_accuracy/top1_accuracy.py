"""Top-1 accuracy as a local ``evaluate`` metric module, loadable offline with ``evaluate.load(<this folder>)``.

``evaluate.load("accuracy")`` fetches ``evaluate-metric/accuracy`` from the Hub (and needs scikit-learn), so it fails
offline; this module ships inside ``hf_ssdd`` and is loaded by path. One import per line: evaluate's dependency
scanner misreads ``import a, b``.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Top-1 accuracy: the fraction of predicted class ids that equal the reference class ids."

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class ids.
    references (`list` of `int`): true class ids.
Returns:
    accuracy (`float`): fraction of correct predictions, in [0, 1].
Examples:
    >>> metric = evaluate.load("hf_ssdd/metrics/top1_accuracy")
    >>> metric.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'accuracy': 0.75}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Top1Accuracy(evaluate.Metric):
    """Top-1 accuracy of integer class predictions."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.size == 0:
            raise ValueError("top-1 accuracy needs at least one prediction")
        return {"accuracy": float((predictions == references).mean())}
