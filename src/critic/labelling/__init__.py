"""The labelling loop, from unlabelled reviews to the next model: what to ask a person next (selection.py) and the
session that joins the labels store (data/store.py), the current model and the retrain in the background
(session.py). The labelling server around it is serve/labelling.py (`critic label`)."""
