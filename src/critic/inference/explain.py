"""Which words pushed a decision: integrated gradients (Captum) on the input embeddings, summed per word.

The explanation covers the tokens the model actually read (after cleaning and truncation); words cut by the
window get no score and are marked as such.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from critic import data
from critic.text import truncate


@dataclass
class Explanation:
    text: str  # the cleaned text the words refer to
    label: str
    probability: float
    words: list[dict]  # {"word", "start", "end", "score"}; score in [-1, 1] towards `label`, None if not read
    truncated: bool

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "probability": self.probability,
            "truncated": self.truncated,
            "text": self.text,
            "words": self.words,
        }


def explain(
    classifier, text: str, steps: int = 24, internal_batch_size: int = 8, target: str | None = None
) -> Explanation:
    """Attribute `classifier`'s probability of `target` (default: the predicted class) on `text` to its words."""
    from captum.attr import LayerIntegratedGradients

    if not isinstance(text, str) or not text.strip():
        raise ValueError("text 0: empty text")
    if target is not None and target not in classifier.labels:
        raise ValueError(f"no class {target!r}; the classes are {', '.join(classifier.labels)}")
    cleaned = data.cleaner(classifier.cleaning)(text)
    encoding = classifier.encoder.backend.encode(cleaned, add_special_tokens=False)
    ids = np.asarray(encoding.ids, dtype=np.int64)
    truncation = classifier.truncation
    kept = truncate(
        np.arange(len(ids)), truncation.max_length - classifier.encoder.specials, truncation.strategy, truncation.head
    )
    encoder = classifier.encoder
    input_ids = torch.tensor(encoder.frame(ids[kept]), dtype=torch.long)[None]
    content = slice(len(encoder.prefix), input_ids.shape[1] - len(encoder.suffix))
    baseline = input_ids.clone()
    baseline[0, content] = encoder.pad_id
    mask = torch.ones_like(input_ids)

    model = classifier.model.float().eval()
    device = next(model.parameters()).device

    def probabilities(inputs, attention):
        return torch.softmax(model(input_ids=inputs, attention_mask=attention).logits.float(), dim=-1)

    with torch.inference_mode():
        probs = probabilities(input_ids.to(device), mask.to(device))[0].cpu().numpy()
    target = int(probs.argmax()) if target is None else classifier.labels.index(target)
    method = LayerIntegratedGradients(lambda i, a: probabilities(i, a)[:, target], model.get_input_embeddings())
    attributions = method.attribute(
        input_ids.to(device),
        baselines=baseline.to(device),
        additional_forward_args=(mask.to(device),),
        n_steps=steps,
        internal_batch_size=internal_batch_size,
    )
    per_token = attributions.sum(dim=-1)[0, content].detach().float().cpu().numpy()
    words = word_attributions(encoding, kept, per_token, cleaned)
    return Explanation(cleaned, classifier.labels[target], float(probs[target]), words, len(kept) < len(ids))


def word_attributions(encoding, kept: np.ndarray, per_token: np.ndarray, cleaned: str) -> list[dict]:
    """The tokens' attributions summed over each word of `cleaned`, scaled so that the strongest is ±1; a word
    the window cut has no score."""
    word_scores: dict[int, float] = {}
    for token_index, score in zip(kept, per_token):
        word = encoding.word_ids[token_index]
        if word is not None:
            word_scores[word] = word_scores.get(word, 0.0) + float(score)
    scale = max((abs(v) for v in word_scores.values()), default=1.0) or 1.0
    words, seen = [], set()
    for word in encoding.word_ids:
        if word is None or word in seen:
            continue
        seen.add(word)
        start, end = encoding.word_to_chars(word)
        score = word_scores.get(word)
        words.append(
            {
                "word": cleaned[start:end],
                "start": start,
                "end": end,
                "score": None if score is None else round(score / scale, 4),
            }
        )
    return words


def render_terminal(explanation: Explanation) -> str:
    """Rich markup: words that pushed towards the label in green, against it in red, unread words dimmed."""
    from rich.markup import escape

    pieces, position = [], 0
    for word in explanation.words:
        pieces.append(escape(explanation.text[position : word["start"]]))
        score = word["score"]
        if score is None:
            pieces.append(f"[dim]{escape(word['word'])}[/dim]")
        elif abs(score) < 0.1:
            pieces.append(escape(word["word"]))
        else:
            colour = "green" if score > 0 else "red"
            style = f"bold {colour}" if abs(score) > 0.5 else colour
            pieces.append(f"[{style}]{escape(word['word'])}[/{style}]")
        position = word["end"]
    pieces.append(escape(explanation.text[position:]))
    return "".join(pieces)
