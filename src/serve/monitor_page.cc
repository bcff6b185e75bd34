#include "serve/monitor_page.h"

namespace nsa::serve {

const std::string& monitor_page() {
  static const std::string page = R"HTML(<!doctype html>
<html><head><meta charset="utf-8"><title>nsa serve</title>
<style>
body { font: 14px sans-serif; margin: 16px; display: flex; gap: 24px; }
#chat { width: 46%; } #monitor { flex: 1; }
#log { border: 1px solid #ccc; height: 360px; overflow-y: auto; padding: 8px; white-space: pre-wrap; }
.user { color: #1a4c8b; } .assistant { color: #222; }
canvas { border: 1px solid #ccc; display: block; margin-bottom: 12px; }
.bar { height: 14px; display: inline-block; vertical-align: middle; }
</style></head><body>
<div id="chat">
  <h3>Conversation <span id="cid"></span></h3>
  <div id="log"></div>
  <form id="form"><input id="msg" size="50" value="And God said"><button>Send</button></form>
</div>
<div id="monitor">
  <h3>Last step: selection map and gates</h3>
  <div id="read"></div>
  <canvas id="map" width="520" height="160"></canvas>
  <div id="gates"></div>
</div>
<script>
// ?conversation=ID watches (and chats into) an existing conversation; else a new one.
const cid = new URLSearchParams(location.search).get('conversation') || ('page' + Math.floor(Math.random() * 1e9));
document.getElementById('cid').textContent = cid;
const log = document.getElementById('log');
function line(cls, text) { const d = document.createElement('div'); d.className = cls; d.textContent = text; log.appendChild(d); return d; }
document.getElementById('form').onsubmit = async (e) => {
  e.preventDefault();
  const text = document.getElementById('msg').value;
  line('user', 'User: ' + text);
  const out = line('assistant', 'Assistant:');
  const r = await fetch('/v1/chat/completions', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({messages: [{role: 'user', content: text}], conversation: cid, max_tokens: 80,
                          temperature: 0.8, stream: true, stop: ['\n']})});
  const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = '';
  for (;;) {
    const {value, done} = await reader.read(); if (done) break;
    buf += dec.decode(value, {stream: true});
    let i; while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, i); buf = buf.slice(i + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const j = JSON.parse(ev.slice(6));
      if (j.error) { out.textContent += ' [' + j.error.message + ']'; continue; }
      const c = j.choices[0].delta.content; if (c) out.textContent += c;
    }
  }
};
// The conversation so far (a watched one may have history).
fetch('/v1/conversations/' + cid).then(r => r.ok ? r.json() : null).then(c => { if (c && c.text) line('assistant', c.text); });
async function poll() {
  try {
    const r = await fetch('/v1/conversations/' + cid + '/attention');
    if (r.ok) draw(await r.json());
  } catch (e) {}
  setTimeout(poll, 500);
}
function draw(a) {
  document.getElementById('read').textContent = 'position ' + a.position + ': ' + a.tokens_read +
    ' tokens read (dense: ' + a.dense_tokens + ')';
  const cv = document.getElementById('map'), g = cv.getContext('2d');
  g.clearRect(0, 0, cv.width, cv.height);
  const rows = []; a.layers.forEach(l => l.selected_blocks.forEach(b => rows.push(b)));
  const blocks = Math.max(1, Math.ceil((a.position + 1) / a.block_tokens));
  const w = cv.width / blocks, h = rows.length ? cv.height / rows.length : cv.height;
  g.fillStyle = '#eee'; g.fillRect(0, 0, cv.width, cv.height);
  g.fillStyle = '#d33';
  rows.forEach((b, r) => b.forEach(k => { if (k >= 0) g.fillRect(k * w, r * h + 1, Math.max(1, w - 1), h - 2); }));
  const gates = document.getElementById('gates'); gates.innerHTML = '';
  const colors = {cmp: '#48a', slc: '#d33', win: '#4a4'};
  a.layers.forEach(l => {
    const d = document.createElement('div'); d.textContent = 'layer ' + l.layer + ' ';
    for (const k of ['cmp', 'slc', 'win']) {
      const s = document.createElement('span'); s.className = 'bar';
      s.style.width = (l.gates[k] * 120) + 'px'; s.style.background = colors[k]; s.title = k + ' ' + l.gates[k].toFixed(3);
      d.appendChild(s); d.appendChild(document.createTextNode(' ' + k + ' ' + l.gates[k].toFixed(2) + ' '));
    }
    gates.appendChild(d);
  });
}
poll();
</script></body></html>
)HTML";
  return page;
}

}  // namespace nsa::serve
