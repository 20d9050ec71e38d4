"""`playground`: a page of small widgets that each produce one kind of event the detectors look for —
JS dialogs, an ARIA dialog, DOM updates, a JSON request, a download, a popup, an outside link and
image (which the sandbox must block). Tests of the detectors and the env's plumbing run against it.
``/playground/escapes`` offers every route a page has to a document the agent could have written (data:,
blob:, about:blank, view-source:, filesystem: by link, form, script, redirect, popup and iframe): the env's
wall must stop each one (tests/test_forge.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .base import App, Html, Request, Response, html_response, not_found, page, redirect, render

_SCRIPT = """
const $ = id => document.getElementById(id);
$('alert-btn').onclick = () => alert('Hello from the playground');
$('confirm-btn').onclick = () => { $('confirm-result').textContent = confirm('Delete the draft?') ? 'Draft deleted' : 'Kept'; };
$('dialog-btn').onclick = () => { $('settings-dialog').hidden = false; };
$('close-dialog').onclick = () => { $('settings-dialog').hidden = true; };
$('add-btn').onclick = () => { const p = document.createElement('p'); p.textContent = 'Item added'; $('items').append(p); window.itemsAdded = (window.itemsAdded || 0) + 1; };
$('send-btn').onclick = async () => {
  const r = await fetch('{echo}', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                    body: JSON.stringify({message: $('message').value, kind: 'note'})});
  $('send-result').textContent = r.ok ? 'Message sent' : 'Sending failed';
};
"""


#: a document that claims what a task's detectors look for (`/escapes`)
FORGED_HTML = "<title>Forged</title><p>Conversation archived.</p><script>window.forged = true</script>"
FORGED_URL = "data:text/html," + FORGED_HTML.replace("#", "%23")

_ESCAPES_SCRIPT = """
const $ = id => document.getElementById(id);
const forged = %s;
const blob = () => URL.createObjectURL(new Blob([forged], {type: 'text/html'}));
$('script-data').onclick = () => { location.href = 'data:text/html,' + encodeURIComponent(forged); };
$('script-blob').onclick = () => { location.href = blob(); };
$('script-about').onclick = () => { location.href = 'about:blank'; };
$('script-filesystem').onclick = () => { location.href = 'filesystem:' + location.origin + '/temporary/f.html'; };
$('popup-blank').onclick = () => { const w = window.open(''); w.document.write(forged); w.document.close(); };
$('popup-blob').onclick = () => { window.open(blob()); };
$('iframe-data').onclick = () => { const f = document.createElement('iframe');
  f.src = 'data:text/html,' + encodeURIComponent(forged); document.body.append(f); };
$('iframe-blob').onclick = () => { const f = document.createElement('iframe'); f.src = blob(); document.body.append(f); };
"""


def _escapes() -> Html:
    return render(
        "<h1>Escapes</h1>\n"
        '<p><a href="{data}">Data link</a> · <a href="about:blank">Blank link</a> · '
        '<a href="view-source:/playground/">Source link</a> · <a href="/playground/redirect-data">Redirect link</a></p>\n'
        '<form method="get" action="{data}"><button type="submit">Data form</button></form>\n'
        '<div class="actions">'
        + "".join(f'<button type="button" id="{b}">{b.replace("-", " ").capitalize()}</button>' for b in (
            "script-data", "script-blob", "script-about", "script-filesystem", "popup-blank", "popup-blob",
            "iframe-data", "iframe-blob"))
        + "</div>\n<script>{script}</script>",
        data=FORGED_URL, script=Html(_ESCAPES_SCRIPT % json.dumps(FORGED_HTML).replace("</", "<\\/")),
    )


@dataclass
class PlaygroundState:
    messages: list[dict[str, Any]] = field(default_factory=list)
    downloads: int = 0
    uploads: list[dict[str, Any]] = field(default_factory=list)  # name, size, text (first 200 chars), note


class PlaygroundApp(App):
    name = "playground"
    title = "Playground"
    description = "Widgets that raise dialogs, send requests and download files (for detector tests)."

    def new_state(self, seed: int) -> PlaygroundState:
        return PlaygroundState()

    def facts(self, state: PlaygroundState) -> dict[str, str]:
        return {"greeting": "Hello from the playground"}

    def public_state(self, state: PlaygroundState) -> dict[str, Any]:
        return {
            "messages": [dict(m) for m in state.messages], "downloads": state.downloads,
            "uploads": [dict(u) for u in state.uploads],
        }

    def handle(self, req: Request, state: PlaygroundState) -> Response:
        if req.path == "/":
            return html_response(page("Playground", self._index(req), app_title=self.title))
        if req.path == "/api/echo" and req.method == "POST":
            state.messages.append(dict(req.form))
            return Response(body=json.dumps({"ok": True}).encode(), content_type="application/json")
        if req.path == "/api/messages":  # the episode's messages as JSON (what `http_json` probes)
            return Response(body=json.dumps(state.messages).encode(), content_type="application/json")
        if req.path == "/upload" and req.method == "POST":
            f = req.files.get("attachment")
            if f is None:
                return html_response(page("Upload", Html("<h1>Upload failed</h1><p role=alert>No file chosen.</p>"), app_title=self.title), status=400)
            text = f.data.decode("utf-8", "replace")
            state.uploads.append({"name": f.filename, "size": len(f.data), "text": text[:200], "note": req.form.get("note", "")})
            return html_response(page("Upload", render("<h1>Uploaded</h1><p role=status>Received {name} ({size} bytes).</p>", name=f.filename, size=len(f.data)), app_title=self.title))
        if req.path == "/notes.txt":
            state.downloads += 1
            return Response(
                body=b"Playground notes\nline two\n",
                content_type="text/plain; charset=utf-8",
                headers=[("Content-Disposition", 'attachment; filename="notes.txt"')],
            )
        if req.path == "/popup":
            return html_response(
                page("Popup", Html("<h1>Popup page</h1><p>Opened in a new tab.</p>"), app_title=self.title)
            )
        if req.path == "/escapes":
            return html_response(page("Escapes", _escapes(), app_title=self.title))
        if req.path == "/redirect-data":
            return redirect(FORGED_URL, status=302)
        return not_found(self.title)

    def _index(self, req: Request) -> Html:
        return render(
            "<h1>Playground</h1>\n"
            '<div class="actions">'
            '<button type="button" id="alert-btn">Show alert</button>'
            '<button type="button" id="confirm-btn">Ask to confirm</button>'
            '<button type="button" id="dialog-btn">Open settings</button>'
            '<button type="button" id="add-btn">Add item</button></div>\n'
            '<p id="confirm-result" role="status"></p>\n'
            '<div id="items"></div>\n'
            '<div role="dialog" aria-modal="true" aria-label="Settings" id="settings-dialog" hidden>'
            '<h2>Settings</h2><button type="button" id="close-dialog">Close settings</button></div>\n'
            '<div class="field"><label for="message">Message</label><input type="text" id="message" name="message"></div>\n'
            '<div class="field"><input type="checkbox" id="subscribe" name="subscribe">'
            '<label for="subscribe">Subscribe</label></div>\n'
            '<div class="actions"><button type="button" id="send-btn">Send message</button></div>\n'
            '<p id="send-result" role="status"></p>\n'
            '<form method="post" enctype="multipart/form-data" action="{upload}">'
            '<div class="field"><label for="attachment">Attachment</label><input type="file" id="attachment" name="attachment"></div>'
            '<div class="field"><label for="note">Note</label><input type="text" id="note" name="note"></div>'
            '<button type="submit">Upload file</button></form>\n'
            '<p><a href="{notes}">Download notes</a> · <a href="{popup}" target="_blank">Open popup</a> · '
            '<a href="http://example.com/outside">Outside link</a></p>\n'
            '<img src="http://example.com/tracker.png" alt="" width="1" height="1">\n'
            "<script>{script}</script>",
            notes=req.url("/notes.txt"),
            upload=req.url("/upload"),
            popup=req.url("/popup"),
            script=Html(_SCRIPT.replace("{echo}", req.url("/api/echo"))),
        )
