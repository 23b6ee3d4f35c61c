"""The model page renders the model card for people and serves the training report's figures."""

from __future__ import annotations

from markupsafe import escape


def test_model_card_page(client, bundle):
    response = client.get("/model")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    card = bundle.card
    assert bundle.version in html
    for cls in card["classes"]:
        assert cls in html
    assert "Validation metrics" in html and "Test metrics" in html
    assert f"{card['metrics']['test']['ensemble']['accuracy']:.3f}" in html
    assert f"{card['metrics']['val']['ensemble']['roc_auc']:.3f}" in html
    assert f"{card['threshold']['value']:.3f}" in html
    assert str(card["data"]["train"]["total"]) in html
    for limitation in card["limitations"]:
        assert str(escape(limitation)) in html
    for source in card["metrics"]["test"].get("ensemble_per_source", {}):
        assert source in html


def test_report_figures(client, model_dir):
    figures = sorted(p.name for p in (model_dir / "report").glob("*.png"))
    html = client.get("/model").get_data(as_text=True)
    for name in figures:
        assert f'src="/model/report/{name}"' in html
        response = client.get(f"/model/report/{name}")
        assert response.status_code == 200 and response.data.startswith(b"\x89PNG")


def test_report_serves_nothing_else(client):
    for name in ("missing.png", "..%2Fmodel_card.json", "model_card.json", "..%2F..%2Fapp.py"):
        assert client.get(f"/model/report/{name}").status_code == 404, name
