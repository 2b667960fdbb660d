from manga_assets.model.policy import retraining_decision, signature_digest

SIGNATURE = {"code_version": "1", "latent_dim": 32, "epochs": 30}


def previous(n=100, signature=SIGNATURE):
    return {"signature_digest": signature_digest(signature), "n_galaxies_trained": n}


def test_first_model_is_trained():
    decision = retraining_decision(None, SIGNATURE, 50, growth_to_retrain=0.25)
    assert decision.retrain and decision.reason == "no trained model yet"


def test_a_few_new_galaxies_are_embedded_with_the_current_model():
    decision = retraining_decision(previous(), SIGNATURE, 110, growth_to_retrain=0.25)
    assert not decision.retrain
    assert "grew by 10% (100 -> 110 galaxies)" in decision.reason


def test_growth_past_the_threshold_retrains():
    decision = retraining_decision(previous(), SIGNATURE, 125, growth_to_retrain=0.25)
    assert decision.retrain and "grew by 25%" in decision.reason


def test_changed_hyper_parameters_retrain():
    changed = {**SIGNATURE, "latent_dim": 16}
    decision = retraining_decision(previous(), changed, 100, growth_to_retrain=0.25)
    assert decision.retrain and "hyper-parameters changed" in decision.reason


def test_forced_retraining():
    assert retraining_decision(
        previous(), SIGNATURE, 100, growth_to_retrain=0.25, force=True
    ).retrain


def test_signature_digest_ignores_key_order():
    assert signature_digest({"a": 1, "b": 2}) == signature_digest({"b": 2, "a": 1})
