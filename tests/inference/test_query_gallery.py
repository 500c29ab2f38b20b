"""Query/gallery evaluation against a NumPy re-derivation of Recall@K."""

from __future__ import annotations

import numpy as np
import pytest

import smartmine
from smartmine.inference import InferenceError, list_images
from smartmine.inference.query_gallery import evaluate_query_gallery


def test_csv_with_query_and_gallery_flags(photo_run, tmp_path) -> None:
    model = smartmine.load(photo_run[0])
    listed = list_images(photo_run[1])
    rows = ["path,label,is_query,is_gallery"]
    for i, (p, c) in enumerate(zip(listed.paths, listed.labels, strict=True)):
        rows.append(f"{p},{c},{int(i % 3 == 0)},{int(i % 3 != 0)}")
    csv = tmp_path / "qg.csv"
    csv.write_text("\n".join(rows) + "\n")
    got = evaluate_query_gallery(model, str(csv), str(csv), ks=(1, 2))
    emb = model.embed(listed.paths).numpy()
    labels = np.array(listed.labels)
    q = np.arange(len(labels)) % 3 == 0
    d = np.linalg.norm(emb[q][:, None] - emb[~q][None], axis=2)
    order = np.argsort(d, axis=1, kind="stable")
    hit = labels[~q][order] == labels[q][:, None]
    assert got["num_queries"] == int(q.sum()) and got["num_gallery"] == int((~q).sum())
    assert got["recall@1"] == pytest.approx(hit[:, 0].mean())
    assert got["recall@2"] == pytest.approx(hit[:, :2].any(axis=1).mean())


def test_overlap_and_unlabelled_sides_are_refused(photo_run, tmp_path) -> None:
    model = smartmine.load(photo_run[0])
    with pytest.raises(InferenceError, match="both queries and gallery"):
        evaluate_query_gallery(model, str(photo_run[1]), str(photo_run[1]))
    single = sorted(photo_run[1].rglob("*.png"))[0]
    with pytest.raises(InferenceError, match="have no classes"):
        evaluate_query_gallery(model, str(single), str(photo_run[1]))


def test_inshop_query_and_gallery_split_names(photo_run, tmp_path) -> None:
    """``--query query --gallery gallery`` on a (fake, tiny) In-Shop layout: the dataset's own splits."""
    import dataclasses

    from PIL import Image

    items = {"id_1": ["query", "gallery", "gallery"], "id_2": ["query", "gallery"], "id_3": ["train", "train"]}
    lines = []
    pngs = sorted(photo_run[1].rglob("*.png"))
    for item, statuses in items.items():
        for k, status in enumerate(statuses):
            rel = f"img/MEN/Tees/{item}/{k:02d}_front.jpg"
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.open(pngs[len(lines) * 3]).convert("RGB").save(tmp_path / rel)
            lines.append(f"{rel} {item} {status}")
    (tmp_path / "list_eval_partition.txt").write_text(f"{len(lines)}\nimage_name item_id evaluation_status\n"
                                                      + "\n".join(lines) + "\n")
    model = smartmine.load(photo_run[0])
    cfg = model.config
    model.config = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, name="inshop", root=str(tmp_path),
                                                                     options={}))
    got = evaluate_query_gallery(model, "query", "gallery", ks=(1, 2))
    q_paths = [tmp_path / line.split()[0] for line in lines if line.endswith(" query")]
    g_paths = [tmp_path / line.split()[0] for line in lines if line.endswith(" gallery")]
    q_lab = np.array([p.parent.name for p in q_paths])
    g_lab = np.array([p.parent.name for p in g_paths])
    q, g = model.embed([str(p) for p in q_paths]).numpy(), model.embed([str(p) for p in g_paths]).numpy()
    nearest = np.argmin(np.linalg.norm(q[:, None] - g[None], axis=2), axis=1)
    assert got["num_queries"] == 2 and got["num_gallery"] == 3
    assert got["recall@1"] == pytest.approx(np.mean(g_lab[nearest] == q_lab))
