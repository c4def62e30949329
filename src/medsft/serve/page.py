"""The page `medsft serve --ui` shows at `/`: a chat box whose answers stream in, and with an
adapter the base model's answer beside the tuned one. One self-contained HTML file: no external
script, style or font, so it works on a machine with no internet."""

from __future__ import annotations

import html
import json

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>medsft</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em; color: #222; }
h1 { font-size: 1.2em; margin: 0 0 .6em; }
#columns { display: grid; grid-template-columns: repeat(var(--n), 1fr); gap: 1em; }
.column h2 { font-size: 1em; margin: 0 0 .4em; color: #555; }
.turn { margin: .4em 0; padding: .5em .7em; border-radius: 6px; white-space: pre-wrap; }
.user { background: #eef3fb; } .assistant { background: #f4f4f4; } .error { background: #fde8e8; }
form { display: flex; gap: .5em; margin-top: 1em; }
textarea { flex: 1; font: inherit; padding: .5em; min-height: 3em; }
button { font: inherit; padding: .5em 1em; }
#key { width: 14em; }
</style></head>
<body>
<h1>medsft: __TITLE__</h1>
<div id="columns" style="--n: __N__"></div>
<form id="ask">
  <textarea id="question" placeholder="Ask a question (Enter sends, Shift+Enter adds a line)"></textarea>
  <div>__KEY__<button id="send" type="submit">Send</button> <button id="reset" type="button">Reset</button></div>
</form>
<script>
"use strict";
const MODELS = __MODELS__;
const histories = MODELS.map(() => []);
const columns = document.getElementById("columns");
const logs = MODELS.map((name) => {
  const column = document.createElement("div");
  column.className = "column";
  column.dataset.model = name;
  const title = document.createElement("h2");
  title.textContent = name.endsWith("-base") ? name + " (adapter off)" : name;
  const log = document.createElement("div");
  log.className = "log";
  column.append(title, log);
  columns.append(column);
  return log;
});

function bubble(log, role, text) {
  const div = document.createElement("div");
  div.className = "turn " + role;
  div.textContent = text;
  log.append(div);
  return div;
}

async function answer(index, question) {
  const log = logs[index];
  bubble(log, "user", question);
  const out = bubble(log, "assistant", "");
  histories[index].push({ role: "user", content: question });
  const headers = { "Content-Type": "application/json" };
  const key = document.getElementById("key");
  if (key && key.value) headers["Authorization"] = "Bearer " + key.value;
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers,
    body: JSON.stringify({ model: MODELS[index], messages: histories[index], stream: true, temperature: 0 }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    out.className = "turn error";
    out.textContent = (body.error && body.error.message) || ("HTTP " + response.status);
    histories[index].pop();
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\\n\\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
      const choice = JSON.parse(event.slice(6)).choices[0];
      if (choice && choice.delta && choice.delta.content) out.textContent += choice.delta.content;
    }
  }
  out.dataset.done = "1";
  histories[index].push({ role: "assistant", content: out.textContent });
}

document.getElementById("ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = document.getElementById("question");
  const question = box.value.trim();
  if (!question) return;
  box.value = "";
  const send = document.getElementById("send");
  send.disabled = true;
  try {
    for (let i = 0; i < MODELS.length; i++) await answer(i, question);  // the server answers one at a time
  } finally {
    send.disabled = false;
  }
});
document.getElementById("question").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    document.getElementById("ask").requestSubmit();
  }
});
document.getElementById("reset").addEventListener("click", () => {
  histories.forEach((h) => h.length = 0);
  logs.forEach((log) => log.replaceChildren());
});
</script>
</body></html>
"""


def page(names: list[str], needs_key: bool) -> str:
    """Base first when there is one, so the eye reads left to right: before, after."""
    ordered = sorted(names, key=lambda n: not n.endswith("-base"))
    key = '<input id="key" type="password" placeholder="API key"> ' if needs_key else ""
    return (_PAGE.replace("__TITLE__", html.escape(names[0])).replace("__N__", str(len(names)))
            .replace("__KEY__", key).replace("__MODELS__", json.dumps(ordered).replace("</", "<\\/")))
