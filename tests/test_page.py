"""The search page (GET /), clicked through in a real headless Chromium.

Every flow is driven with real mouse and key events over the DevTools protocol
(tests/browser.py) and checked twice: from the page's DOM, and against the API's answer to
the same query sent here (the same ids in the same order, the same cosines as printed, each
drawn box at the pixel position its bbox gives in the shown photo). A screenshot of each
flow is kept in target/test-artifacts/page/. The page must ask for nothing outside the
gateway.

The module's own gateway (face indexing on, its own store) holds photos in three sets with
different tags and dates, so the filters have something to tell apart:
- "beach" set: 8 COCO photos tagged beach,holiday, dated 2024-06-01;
- "city" set: 8 other COCO photos, no tags, dated 2025-01-15;
- "faces" set: 4 photos with listed faces, dated 2025-03-01.
"""
from __future__ import annotations

import hashlib
import json
import os

import pytest
import requests
from PIL import Image

from browser import Browser, chromium_path
from test_gateway import COCO_IMAGES, REPO_ROOT, SHARED, Gateway, gateway, photo_paths, read_bytes, sha256  # noqa: F401
from test_gateway_abuse import READ_KEY, WRITE_KEY

FACE_LIST = os.path.join(SHARED, "data", "faces", "coco_faces_scrfd500m.json")
ARTIFACTS = os.path.join(REPO_ROOT, "target", "test-artifacts", "page")
SET_SIZE = 8
# The page prints cosines to 4 decimals; a drawn box may be off by the rounding of percent
# positions to device pixels.
PIXEL_TOLERANCE = 1.5


def face_names() -> list[str]:
    with open(FACE_LIST) as f:
        return sorted(json.load(f))[:4]


def photo_sets() -> dict[str, list[str]]:
    faces = [os.path.join(COCO_IMAGES, n) for n in face_names()]
    others = [p for p in photo_paths() if p not in faces]
    return {"beach": others[:SET_SIZE], "city": others[SET_SIZE:2 * SET_SIZE], "faces": faces,
            "unstored": others[2 * SET_SIZE:2 * SET_SIZE + 4]}


SET_FIELDS = {"beach": {"tags": "beach,holiday", "created_at": "2024-06-01"},
              "city": {"created_at": "2025-01-15"},
              "faces": {"created_at": "2025-03-01"}}


@pytest.fixture(scope="module")
def site(gateway, triton, tmp_path_factory):  # noqa: F811  (gateway loads the models)
    server = Gateway(str(tmp_path_factory.mktemp("page-gateway-data")), triton.grpc_address,
                     extra_args=("--index-faces", "true")).start()
    try:
        sets = photo_sets()
        for name, fields in SET_FIELDS.items():
            files = [("image", (os.path.basename(p), read_bytes(p))) for p in sets[name]]
            r = server.post("/ingest/batch", files=files, data=fields)
            assert r.status_code == 200 and r.json()["created"] == len(sets[name]), r.text
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = chromium_path()
    if executable is None:
        pytest.fail("no chromium (scripts/setup_browser.sh installs Debian's): the page tests cannot run",
                    pytrace=False)
    os.makedirs(ARTIFACTS, exist_ok=True)
    b = Browser(executable, str(tmp_path_factory.mktemp("chromium-profile")))
    yield b
    b.close()


def screenshot(browser: Browser, name: str) -> None:
    path = os.path.join(ARTIFACTS, name + ".png")
    browser.screenshot(path)
    print(f"screenshot: {path}")


def only_same_origin(browser: Browser, base: str) -> None:
    foreign = [u for u in browser.requested_urls() if not u.startswith((base + "/", "blob:", "data:"))]
    assert not foreign, f"the page asked for something outside the gateway: {foreign}"


def new_search(browser: Browser) -> None:
    """Clears the status line, so that the next wait_for_results sees the answer to the action
    that follows, not the previous search's."""
    browser.evaluate("document.getElementById('status').textContent = ''")


def wait_for_results(browser: Browser, expected: int) -> list[dict]:
    """Waits for `expected` result cards with their photos loaded; returns what each shows."""
    browser.wait_for("document.querySelector('#status').textContent.match(/results|Nothing found|failed/)", 60,
                     "the search to answer")
    status = browser.evaluate("document.querySelector('#status').textContent")
    assert "failed" not in status, status
    browser.wait_for(f"document.querySelectorAll('#results .card').length === {expected} && "
                     f"[...document.querySelectorAll('#results .frame')].every(f => f.dataset.loaded)", 60,
                     f"{expected} result photos")
    return shown_cards(browser)


def shown_cards(browser: Browser) -> list[dict]:
    return browser.evaluate("""[...document.querySelectorAll('#results .card')].map(card => {
        const img = card.querySelector('img').getBoundingClientRect();
        return {
          image_id: card.dataset.imageId, kind: card.dataset.kind, score_text: card.querySelector('.score').textContent,
          object_index: card.dataset.objectIndex, face_index: card.dataset.faceIndex,
          img: {x: img.left, y: img.top, width: img.width, height: img.height},
          alt: card.querySelector('img').alt,
          boxes: [...card.querySelectorAll('.box')].map(b => {
            const r = b.getBoundingClientRect();
            return {bbox: b.dataset.bbox.split(',').map(Number), classes: b.className,
                    rect: {x: r.left, y: r.top, width: r.width, height: r.height}};
          }),
        };
    })""")


def assert_box_at(box: dict, img: dict, width: int, height: int, what: str) -> None:
    x1, y1, x2, y2 = box["bbox"]
    sx, sy = img["width"] / width, img["height"] / height
    expected = {"x": img["x"] + x1 * sx, "y": img["y"] + y1 * sy, "width": (x2 - x1) * sx, "height": (y2 - y1) * sy}
    for key, value in expected.items():
        assert abs(box["rect"][key] - value) <= PIXEL_TOLERANCE, (what, key, box["rect"], expected)


def assert_cards_equal_api(cards: list[dict], hits: list[dict], kind: str) -> None:
    """The page shows exactly the API's hits, in its order, with its cosines and boxes."""
    assert [c["image_id"] for c in cards] == [h["image_id"] for h in hits]
    for card, hit in zip(cards, hits):
        assert card["kind"] == kind
        assert card["score_text"] == f"cosine {hit['score']:.4f}", (card["score_text"], hit["score"])
        assert card["alt"], "every photo has alt text"
        if kind == "image":
            matched = hit["matched_object"]["index"] if hit["matched_object"] else None
            expected = [(o["bbox"], o["index"] == matched) for o in hit["objects"]]
        elif kind == "object":
            assert int(card["object_index"]) == hit["object_index"]
            expected = [(hit["bbox"], True)]
        else:
            assert int(card["face_index"]) == hit["face_index"]
            expected = [(hit["bbox"], True)]
        assert len(card["boxes"]) == len(expected), (card["boxes"], expected)
        for box, (bbox, is_match) in zip(card["boxes"], expected):
            assert box["bbox"] == pytest.approx(bbox, abs=1e-3)
            assert ("matched" in box["classes"].split()) == is_match, (box, bbox)
            assert_box_at(box, card["img"], hit["width"], hit["height"], hit["image_id"])


def api_results(r: requests.Response) -> list[dict]:
    assert r.status_code == 200, r.text
    return r.json()["results"]


def open_page(browser: Browser, site: Gateway, tab: str | None = None) -> None:
    browser.events.clear()
    browser.open(site.url + "/")
    if tab:
        browser.click(f"#tab-{tab}")
        browser.wait_for(f"!document.getElementById('panel-{tab}').hidden", 5)


def test_detect_api_gives_what_ingest_stores(site):
    """POST /detect: an unstored photo's objects are those ingest then stores for it; for
    stored bytes it names the record. GET /classes is the detector's class list."""
    path = photo_sets()["unstored"][3]
    data = read_bytes(path)
    r = site.post("/detect", files={"image": ("q.jpg", data)})
    assert r.status_code == 200, r.text
    detected = r.json()
    assert "image_id" not in detected
    r = site.post("/ingest", files={"image": ("q.jpg", data)})
    assert r.status_code == 201, r.text
    record = site.get(f"/images/{sha256(path)}").json()
    assert (detected["width"], detected["height"]) == (record["width"], record["height"])
    assert len(detected["objects"]) == len(record["objects"]) > 0
    for got, stored in zip(detected["objects"], record["objects"]):
        assert got["class_name"] == stored["class_name"] and got["index"] == stored["index"]
        assert got["bbox"] == pytest.approx(stored["bbox"], abs=1e-3)
        assert got["confidence"] == pytest.approx(stored["confidence"], abs=1e-6)
    again = site.post("/detect", files={"image": ("q.jpg", data)}).json()
    assert again["image_id"] == sha256(path) and again["objects"] == record["objects"]
    assert requests.delete(f"{site.url}/images/{sha256(path)}", timeout=30).status_code == 200
    for bad, status in ((b"not a photo", 422), (b"", 400)):
        r = site.post("/detect", files={"image": ("bad.jpg", bad)})
        assert r.status_code == status and r.json()["error"], r.text
    classes = site.get("/classes").json()["classes"]
    assert len(classes) == 80 and classes[0] == "person" and classes[16] == "dog"


def test_text_search_with_filters_and_paging(site, browser):
    sets = photo_sets()
    beach_ids = {sha256(p) for p in sets["beach"]}
    records = {i: site.get(f"/images/{i}").json() for i in beach_ids}
    # The class most beach photos hold, so the filter keeps several and drops some.
    counts: dict[str, int] = {}
    for record in records.values():
        for name in {o["class_name"] for o in record["objects"] if o["confidence"] >= 0.3}:
            counts[name] = counts.get(name, 0) + 1
    cls = max(sorted(counts), key=counts.get)
    body = {"text": "people outdoors", "classes": [cls], "min_confidence": 0.3, "date_from": "2024-01-01",
            "date_to": "2024-12-31", "tags": ["beach"], "k": 1000, "offset": 0}
    everything = api_results(site.post("/search/hybrid", json=body))
    assert len(everything) == counts[cls] >= 2, (cls, counts)
    k = (len(everything) + 1) // 2

    open_page(browser, site)
    browser.type("#q", body["text"])
    browser.type("#class-input", cls)
    browser.press("Enter")
    browser.wait_for(f"!!document.querySelector('#class-chips .chip[data-class=\"{cls}\"]')", 5, "the class chip")
    browser.type("#min-confidence", "0.3")
    browser.fill("#date-from", "2024-01-01")
    browser.fill("#date-to", "2024-12-31")
    browser.type("#tags", "beach")
    browser.type("#k", str(k))
    new_search(browser)
    browser.click("#text-form button[type=submit]")
    cards = wait_for_results(browser, k)
    first_page = api_results(site.post("/search/hybrid", json={**body, "k": k}))
    assert_cards_equal_api(cards, first_page, "image")
    # Every photo shown passes the filters, by the records themselves.
    for card in cards:
        assert card["image_id"] in beach_ids
        assert any(o["class_name"] == cls and o["confidence"] >= 0.3 for o in records[card["image_id"]]["objects"])
    screenshot(browser, "text-search-filters")

    assert browser.evaluate("!document.getElementById('more').hidden"), "a full page offers more"
    new_search(browser)
    browser.click("#more")
    cards = wait_for_results(browser, len(everything))
    second_page = api_results(site.post("/search/hybrid", json={**body, "k": k, "offset": k}))
    assert_cards_equal_api(cards, first_page + second_page, "image")
    assert [c["image_id"] for c in cards] == [h["image_id"] for h in everything]
    only_same_origin(browser, site.url)


def search_with_photo(browser: Browser, site: Gateway, tab: str, path: str, api_path: str, kind: str) -> list[dict]:
    """Hands `path` to the tab's file input; returns the cards, checked against the API's
    answer for the same photo and page size."""
    open_page(browser, site, tab)
    new_search(browser)
    browser.set_files(f"#{tab}-file", [path])
    k = int(browser.evaluate("document.getElementById('k').value"))
    hits = api_results(site.post(api_path, params={"k": k},
                                 files={"image": (os.path.basename(path), read_bytes(path))}))
    cards = wait_for_results(browser, len(hits))
    assert_cards_equal_api(cards, hits, kind)
    return cards


def test_search_by_photo(site, browser):
    path = photo_sets()["city"][2]
    cards = search_with_photo(browser, site, "photo", path, "/search/similar", "image")
    assert cards[0]["image_id"] == sha256(path) and cards[0]["score_text"] == "cosine 1.0000"
    screenshot(browser, "search-by-photo")
    only_same_origin(browser, site.url)


def stage_boxes(browser: Browser) -> list[dict]:
    return browser.evaluate("""[...document.querySelectorAll('#objects-stage .box')].map(b => {
        const r = b.getBoundingClientRect();
        return {bbox: b.dataset.bbox.split(',').map(Number), classes: b.className,
                rect: {x: r.left, y: r.top, width: r.width, height: r.height}};
    })""")


def test_objects_in_a_photo_pick_and_draw(site, browser):
    path = photo_sets()["unstored"][0]
    data = read_bytes(path)
    detected = site.post("/detect", files={"image": ("q.jpg", data)}).json()
    assert detected["objects"], "the query photo needs objects to pick"
    width, height = detected["width"], detected["height"]

    open_page(browser, site, "objects")
    browser.set_files("#objects-file", [path])
    browser.wait_for(f"document.querySelectorAll('#detected-list button').length === {len(detected['objects'])}",
                     60, "the detected objects")
    img = browser.rect("#objects-photo")
    boxes = stage_boxes(browser)
    assert [b["bbox"] for b in boxes] == [pytest.approx(o["bbox"], abs=1e-3) for o in detected["objects"]]
    for box in boxes:
        assert_box_at(box, img, width, height, "detected box")
    labels = browser.evaluate("[...document.querySelectorAll('#detected-list button')].map(b => b.textContent)")
    assert labels == [f"{o['class_name']} {o['confidence']:.2f}" for o in detected["objects"]]

    # Pick a detected object: the box sent is that object's.
    largest = max(detected["objects"], key=lambda o: (o["bbox"][2] - o["bbox"][0]) * (o["bbox"][3] - o["bbox"][1]))
    browser.click(f"#detected-list button[data-index=\"{largest['index']}\"]")
    box_text = browser.evaluate("document.getElementById('region-box').value")
    assert [float(v) for v in box_text.split(",")] == pytest.approx(largest["bbox"], abs=0.051)
    new_search(browser)
    browser.click("#region-search")
    k = int(browser.evaluate("document.getElementById('k').value"))
    form_box = ",".join(v.strip() for v in box_text.split(","))
    hits = api_results(site.post("/search/region", params={"k": k},
                                 files={"image": ("q.jpg", data), "box": (None, form_box)}))
    cards = wait_for_results(browser, len(hits))
    assert_cards_equal_api(cards, hits, "object")
    screenshot(browser, "objects-pick-detected")

    # Draw a box by dragging over the photo's middle: it becomes the query, in photo pixels.
    img = browser.rect("#objects-photo")
    start = (img["x"] + img["width"] * 0.30, img["y"] + img["height"] * 0.25)
    end = (img["x"] + img["width"] * 0.70, img["y"] + img["height"] * 0.80)
    browser.drag(start, end)
    box_text = browser.evaluate("document.getElementById('region-box').value")
    drawn = [float(v) for v in box_text.split(",")]
    expected = [(start[0] - img["x"]) * width / img["width"], (start[1] - img["y"]) * height / img["height"],
                (end[0] - img["x"]) * width / img["width"], (end[1] - img["y"]) * height / img["height"]]
    scale = max(width / img["width"], height / img["height"])
    assert drawn == pytest.approx(expected, abs=scale + 0.1), (drawn, expected)
    (shown,) = [b for b in stage_boxes(browser) if "drawn" in b["classes"].split()]
    assert_box_at(shown, img, width, height, "drawn box")
    new_search(browser)
    browser.click("#region-search")
    form_box = ",".join(v.strip() for v in box_text.split(","))
    hits = api_results(site.post("/search/region", params={"k": k},
                                 files={"image": ("q.jpg", data), "box": (None, form_box)}))
    browser.wait_for("document.getElementById('results-title').textContent.includes("
                     f"{json.dumps('[' + form_box + ']')})", 10, "the drawn box's search")
    cards = wait_for_results(browser, len(hits))
    assert_cards_equal_api(cards, hits, "object")
    screenshot(browser, "objects-draw-box")
    only_same_origin(browser, site.url)


def test_search_by_face(site, browser):
    path = photo_sets()["faces"][1]
    cards = search_with_photo(browser, site, "faces", path, "/search/faces", "face")
    assert cards[0]["image_id"] == sha256(path)
    screenshot(browser, "search-by-face")


def detail_state(browser: Browser) -> dict:
    return browser.evaluate("""(() => {
        const d = document.getElementById('detail');
        const img = d.querySelector('#detail-frame img').getBoundingClientRect();
        return {open: d.open, image_id: d.dataset.imageId,
                objects: [...d.querySelectorAll('.more-object')].map(b => b.textContent),
                faces: [...d.querySelectorAll('.more-face')].map(b => b.textContent),
                tags: d.querySelector('#detail-tags').textContent,
                img: {x: img.left, y: img.top, width: img.width, height: img.height},
                boxes: [...d.querySelectorAll('#detail-frame .box')].map(b => {
                  const r = b.getBoundingClientRect();
                  return {bbox: b.dataset.bbox.split(',').map(Number), classes: b.className,
                          rect: {x: r.left, y: r.top, width: r.width, height: r.height}};
                })};
    })()""")


def open_detail_of_first_card(browser: Browser, image_id: str) -> dict:
    browser.click("#results .card:first-child button.open")
    browser.wait_for(f"document.getElementById('detail').open && document.getElementById('detail').dataset.imageId "
                     f"=== {json.dumps(image_id)} && document.querySelector('#detail-frame').dataset.loaded", 30,
                     "the detail view")
    return detail_state(browser)


def test_detail_view_and_more_like_this(site, browser):
    face_photo = photo_sets()["faces"][1]
    face_id = sha256(face_photo)
    record = site.get(f"/images/{face_id}").json()
    assert record["objects"] and record["faces"], "the detail photo needs objects and faces"

    open_page(browser, site, "photo")
    k = int(browser.evaluate("document.getElementById('k').value"))
    new_search(browser)
    browser.set_files("#photo-file", [face_photo])
    hits = api_results(site.post("/search/similar", params={"k": k},
                                 files={"image": ("q.jpg", read_bytes(face_photo))}))
    wait_for_results(browser, len(hits))
    detail = open_detail_of_first_card(browser, face_id)
    assert detail["objects"] == [f"More like this {o['class_name']} ({o['confidence']:.2f})" for o in record["objects"]]
    assert detail["faces"] == [f"More of face {f['index'] + 1}" for f in record["faces"]]
    assert detail["tags"] == "none"
    expected = [o["bbox"] for o in record["objects"]] + [f["bbox"] for f in record["faces"]]
    assert [b["bbox"] for b in detail["boxes"]] == [pytest.approx(b, abs=1e-3) for b in expected]
    for box in detail["boxes"]:
        assert_box_at(box, detail["img"], record["width"], record["height"], "detail box")
    screenshot(browser, "detail-view")

    # Each "more like this" shows the API's answer for the stored vector.
    new_search(browser)
    browser.click("#detail-similar")
    hits = api_results(site.get(f"/images/{face_id}/similar", params={"k": k}))
    browser.wait_for("!document.getElementById('detail').open", 5)
    assert_cards_equal_api(wait_for_results(browser, len(hits)), hits, "image")

    open_detail_of_first_card(browser, face_id)
    index = record["objects"][-1]["index"]
    new_search(browser)
    browser.click(f"#detail-objects .more-object[data-index=\"{index}\"]")
    hits = api_results(site.get(f"/images/{face_id}/objects/{index}/similar", params={"k": k}))
    browser.wait_for("document.getElementById('results-title').textContent.startsWith('Objects like')", 10)
    cards = wait_for_results(browser, len(hits))
    assert_cards_equal_api(cards, hits, "object")
    assert (cards[0]["image_id"], int(cards[0]["object_index"])) == (face_id, index)
    screenshot(browser, "more-like-this-object")

    open_detail_of_first_card(browser, face_id)
    new_search(browser)
    browser.click("#detail-faces .more-face[data-index=\"0\"]")
    hits = api_results(site.get(f"/images/{face_id}/faces/0/similar", params={"k": k}))
    browser.wait_for("document.getElementById('results-title').textContent.startsWith('Faces like')", 10)
    cards = wait_for_results(browser, len(hits))
    assert_cards_equal_api(cards, hits, "face")
    assert (cards[0]["image_id"], int(cards[0]["face_index"])) == (face_id, 0)
    screenshot(browser, "more-of-this-face")

    # Keyboard: the open button takes Enter, and Escape closes the view.
    browser.evaluate("document.querySelector('#results .card:first-child button.open').focus()")
    browser.press("Enter")
    browser.wait_for("document.getElementById('detail').open", 10, "the detail view by keyboard")
    browser.press("Escape")
    browser.wait_for("!document.getElementById('detail').open", 5, "Escape to close the view")
    only_same_origin(browser, site.url)


def reencoded(path: str, out: str) -> str:
    """The same picture as new bytes (so a new photo), written to `out`."""
    with Image.open(path) as image:
        image.convert("RGB").save(out, format="JPEG", quality=83)
    return out


def test_upload_several_with_progress_and_plain_errors(site, browser, tmp_path):
    new_photo = reencoded(photo_sets()["unstored"][1], str(tmp_path / "new-photo.jpg"))
    stored_photo = photo_sets()["city"][0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a photo at all")
    before = site.count()
    # What the API says of the broken file (ingest analyses objects and faces at once, so
    # either model may be the one named; the reason is the same).
    refused = site.post("/ingest", files={"image": ("broken.jpg", broken.read_bytes())})
    assert refused.status_code == 422, refused.text
    reason = "not a JPEG, PNG or WebP image"
    assert reason in refused.json()["error"]

    open_page(browser, site, "upload")
    browser.set_files("#upload-files", [new_photo, stored_photo, str(broken)])
    browser.type("#upload-tags", "from-the-page, test")
    browser.click("#upload-start")
    browser.wait_for("[...document.querySelectorAll('#upload-list li')].length === 3 && "
                     "[...document.querySelectorAll('#upload-list li')].every(li => li.dataset.status)", 120,
                     "every upload to finish")
    rows = browser.evaluate("""[...document.querySelectorAll('#upload-list li')].map(li => ({
        file: li.dataset.file, status: li.dataset.status, id: li.dataset.imageId || null,
        progress: li.querySelector('progress').value, text: li.querySelector('.upload-status').textContent}))""")
    by_file = {row["file"]: row for row in rows}
    created = by_file["new-photo.jpg"]
    assert created["status"] == "created" and created["id"] == hashlib.sha256(open(new_photo, "rb").read()).hexdigest()
    assert created["text"].startswith("Stored · ")
    assert by_file[os.path.basename(stored_photo)]["status"] == "already_stored"
    assert by_file[os.path.basename(stored_photo)]["text"].startswith("Already stored")
    failed = by_file["broken.jpg"]
    assert failed["status"] == "failed"
    assert failed["text"].startswith("Not a photo this service can read"), failed
    assert reason in failed["text"], failed["text"]
    assert all(row["progress"] == 1 for row in rows)
    assert browser.evaluate("document.getElementById('upload-total').value") == 1
    assert "2 of 3 photos stored, 1 failed." == browser.evaluate("document.getElementById('status').textContent")
    screenshot(browser, "upload")
    # What the page said happened, happened: one new photo, with the set's tags.
    assert site.count() == before + 1
    record = site.get(f"/images/{created['id']}").json()
    assert sorted(record["tags"]) == ["from-the-page", "test"]
    only_same_origin(browser, site.url)
    assert requests.delete(f"{site.url}/images/{created['id']}", timeout=30).status_code == 200


@pytest.fixture(scope="module")
def keyed_site(gateway, triton, tmp_path_factory):  # noqa: F811  (gateway loads the models)
    server = Gateway(str(tmp_path_factory.mktemp("page-keyed-data")), triton.grpc_address,
                     extra_args=("--read-keys", READ_KEY, "--write-keys", WRITE_KEY)).start()
    try:
        files = [("image", (os.path.basename(p), read_bytes(p))) for p in photo_sets()["beach"][:3]]
        r = server.post("/ingest/batch", files=files, headers={"Authorization": f"Bearer {WRITE_KEY}"})
        assert r.status_code == 200 and r.json()["created"] == 3, r.text
        yield server
    finally:
        server.stop()


def test_key_prompt_then_search(keyed_site, browser):
    open_page(browser, keyed_site)
    # The class list already needs a key: the prompt shows as the page opens.
    browser.wait_for("!document.getElementById('key-form').hidden", 20, "the key prompt")
    browser.type("#q", "a photo")
    new_search(browser)
    browser.click("#text-form button[type=submit]")
    browser.wait_for("document.getElementById('status').className === 'error'", 20, "the refused search")
    browser.type("#api-key", READ_KEY)
    new_search(browser)
    browser.click("#key-form button[type=submit]")
    hits = api_results(keyed_site.post("/search/hybrid", json={"text": "a photo", "k": 24},
                                       headers={"Authorization": f"Bearer {READ_KEY}"}))
    cards = wait_for_results(browser, len(hits))
    assert_cards_equal_api(cards, hits, "image")
    assert browser.evaluate("sessionStorage.getItem('apiKey')") == READ_KEY
    screenshot(browser, "key-prompt")
    only_same_origin(browser, keyed_site.url)


def test_page_is_one_self_contained_file(site):
    r = site.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert len(html.encode()) < 64 * 1024, len(html.encode())
    for needle in ("http://", "https://", "<link", "src=\"//", "@import"):
        assert needle not in html, needle
    assert html.count("<script") == 1
