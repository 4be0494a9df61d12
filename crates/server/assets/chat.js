// frugal's chat page: streams answers from this server's /v1/chat/completions, keeps
// conversations and settings in localStorage. Plain ES2020, no build step, no dependencies.
'use strict';

const STORE = { chats: 'frugal.chats', current: 'frugal.current', settings: 'frugal.settings' };
const $ = (sel) => document.querySelector(sel);

// ---------------------------------------------------------------------------------------------
// Storage

function load(key, fallback) {
  try {
    const v = JSON.parse(localStorage.getItem(key));
    return v ?? fallback;
  } catch {
    return fallback;
  }
}

function store(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch (e) {
    // Full or disabled storage must not break the chat itself.
    console.warn('localStorage:', e);
  }
}

const state = {
  chats: load(STORE.chats, []),
  currentId: load(STORE.current, null),
  settings: load(STORE.settings, {}),
  model: null,
  live: null, // the streaming answer: { chat, msg, view, abort }
};

function saveChats() {
  store(STORE.chats, state.chats);
  store(STORE.current, state.currentId);
}

function currentChat() {
  return state.chats.find((c) => c.id === state.currentId) || null;
}

function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

function titleOf(text) {
  const line = text.trim().split('\n')[0];
  return line.length > 48 ? line.slice(0, 47) + '…' : line || 'New chat';
}

// ---------------------------------------------------------------------------------------------
// Markdown: every character of the model's text is HTML-escaped first; the renderer only adds
// tags of its own, so nothing the model writes becomes markup.

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

// Inline spans of one escaped line. Code spans and links are cut out first so nothing inside
// them (a URL's underscores) is formatted, and put back last (\u0000 cannot occur: renderMarkdown
// strips it).
function inline(s) {
  const held = [];
  const hold = (html) => '\u0000' + (held.push(html) - 1) + '\u0000';
  s = s.replace(/`([^`]+)`/g, (_, code) => hold('<code>' + code + '</code>'));
  // Links: http(s) only, so no javascript: or data: URL becomes clickable.
  s = s.replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g,
    (_, text, url) => hold(`<a href="${url}" target="_blank" rel="noopener noreferrer">${text}</a>`));
  s = s.replace(/\*\*(?=\S)([^*]*\S)\*\*/g, '<strong>$1</strong>');
  s = s.replace(/(^|[^\w])__(?=\S)(.*?\S)__(?!\w)/g, '$1<strong>$2</strong>');
  s = s.replace(/(^|[^*\w])\*([^\s*](?:[^*]*[^\s*])?)\*(?!\*)/g, '$1<em>$2</em>');
  s = s.replace(/(^|[^\w])_([^\s_](?:[^_]*[^\s_])?)_(?!\w)/g, '$1<em>$2</em>');
  return s.replace(/\u0000(\d+)\u0000/g, (_, i) => held[Number(i)]);
}

function codeBlock(lang, lines) {
  const label = lang ? `<span class="lang">${lang}</span>` : '<span class="lang">text</span>';
  const cls = lang ? ` class="language-${lang}"` : '';
  return `<div class="code"><div class="code-bar">${label}` +
    '<button type="button" class="copy" aria-label="Copy code">Copy</button></div>' +
    `<pre><code${cls}>${lines.join('\n')}</code></pre></div>`;
}

function renderMarkdown(text) {
  const lines = escapeHtml(text.replace(/\u0000/g, '')).split(/\r?\n/);
  const out = [];
  let para = [];
  let list = null; // { tag: 'ul' | 'ol', items: [] }

  const flushPara = () => {
    if (para.length) out.push('<p>' + para.map(inline).join('<br>') + '</p>');
    para = [];
  };
  const flushList = () => {
    if (list) out.push(`<${list.tag}>` + list.items.map((i) => `<li>${inline(i)}</li>`).join('') + `</${list.tag}>`);
    list = null;
  };

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^\s*```\s*([\w+#.-]*)\s*$/);
    if (fence) {
      flushPara();
      flushList();
      const code = [];
      // An unclosed fence (the answer is still streaming) runs to the end.
      for (i++; i < lines.length && !/^\s*```\s*$/.test(lines[i]); i++) code.push(lines[i]);
      out.push(codeBlock(fence[1], code));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      flushPara();
      flushList();
      const level = heading[1].length;
      out.push(`<h${level}>${inline(heading[2])}</h${level}>`);
      continue;
    }
    const item = line.match(/^\s*([-*+]|\d+[.)])\s+(.*)$/);
    if (item) {
      flushPara();
      const tag = /\d/.test(item[1]) ? 'ol' : 'ul';
      if (list && list.tag !== tag) flushList();
      if (!list) list = { tag, items: [] };
      list.items.push(item[2]);
      continue;
    }
    if (!line.trim()) {
      flushPara();
      flushList();
      continue;
    }
    if (list && /^\s+\S/.test(line)) {
      // An indented line continues the list item above it.
      list.items[list.items.length - 1] += ' ' + line.trim();
      continue;
    }
    flushList();
    para.push(line);
  }
  flushPara();
  flushList();
  return out.join('');
}

// ---------------------------------------------------------------------------------------------
// Messages

function messageView(msg) {
  const el = document.createElement('article');
  el.className = 'message ' + msg.role;
  el.dataset.role = msg.role;
  el.setAttribute('aria-label', msg.role === 'user' ? 'You' : 'Assistant');
  const view = { el, msg, reasoning: null, body: document.createElement('div'), stats: null, scheduled: false };
  view.body.className = 'content';
  el.append(view.body);
  if (msg.role === 'assistant') {
    const d = document.createElement('details');
    d.className = 'reasoning';
    const s = document.createElement('summary');
    s.textContent = 'Reasoning';
    const r = document.createElement('div');
    r.className = 'reasoning-text';
    d.append(s, r);
    d.hidden = true;
    el.prepend(d);
    view.reasoning = d;
    view.stats = document.createElement('div');
    view.stats.className = 'stats';
    el.append(view.stats);
  }
  paint(view);
  return view;
}

// Draws a message from its data: body, reasoning, stats, state.
function paint(view) {
  const { msg, el } = view;
  if (msg.role === 'user') {
    view.body.textContent = msg.content;
    return;
  }
  el.dataset.state = msg.state || 'done';
  // Screen readers announce the answer once it is complete, not every repaint of it.
  el.setAttribute('aria-busy', String(msg.state === 'streaming'));
  if (msg.reasoning) {
    view.reasoning.hidden = false;
    view.reasoning.querySelector('.reasoning-text').textContent = msg.reasoning;
  }
  view.body.innerHTML = renderMarkdown(msg.content);
  if (msg.error) {
    const e = document.createElement('p');
    e.className = 'error';
    e.setAttribute('role', 'alert');
    e.textContent = msg.error;
    view.body.append(e);
  }
  view.stats.textContent = statsText(msg);
  view.stats.hidden = !view.stats.textContent;
}

// Repaints at most once a frame: chunks arrive faster than it is worth re-rendering markdown.
function schedulePaint(view) {
  if (view.scheduled) return;
  view.scheduled = true;
  requestAnimationFrame(() => {
    view.scheduled = false;
    const stick = nearBottom();
    paint(view);
    if (stick) scrollToBottom();
  });
}

function statsText(msg) {
  const s = msg.stats;
  if (!s) return msg.stopped ? 'stopped' : '';
  const parts = [`${s.tokens} token${s.tokens === 1 ? '' : 's'}`];
  if (s.tps) parts.push(`${s.tps.toFixed(1)} tokens/s`);
  if (msg.finish === 'length') parts.push('cut at max_tokens');
  if (msg.stopped) parts.push('stopped');
  return parts.join(' · ');
}

function nearBottom() {
  const m = $('#messages');
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToBottom() {
  const m = $('#messages');
  m.scrollTop = m.scrollHeight;
}

function renderChat() {
  const box = $('#messages');
  box.replaceChildren();
  const chat = currentChat();
  if (!chat || !chat.messages.length) {
    const p = document.createElement('p');
    p.id = 'empty';
    p.className = 'empty';
    p.textContent = 'Ask anything. Enter sends, Shift+Enter starts a new line.';
    box.append(p);
    return;
  }
  for (const msg of chat.messages) {
    const view = messageView(msg);
    // The streaming answer draws into whichever view shows it now.
    if (state.live && state.live.msg === msg) state.live.view = view;
    box.append(view.el);
  }
  scrollToBottom();
}

function renderSidebar() {
  const ul = $('#conversations');
  ul.replaceChildren();
  for (const chat of [...state.chats].sort((a, b) => b.updated - a.updated)) {
    const li = document.createElement('li');
    li.dataset.id = chat.id;
    if (chat.id === state.currentId) li.setAttribute('aria-current', 'true');
    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'open-chat';
    open.textContent = chat.title;
    open.title = chat.title;
    open.addEventListener('click', () => switchChat(chat.id));
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'delete-chat';
    del.textContent = '×';
    del.setAttribute('aria-label', `Delete conversation “${chat.title}”`);
    del.addEventListener('click', () => deleteChat(chat.id));
    li.append(open, del);
    ul.append(li);
  }
}

function switchChat(id) {
  state.currentId = id;
  saveChats();
  renderSidebar();
  renderChat();
  closeSidebar();
  $('#input').focus();
}

function newChat() {
  state.currentId = null;
  saveChats();
  renderSidebar();
  renderChat();
  closeSidebar();
  $('#input').focus();
}

function deleteChat(id) {
  const chat = state.chats.find((c) => c.id === id);
  if (!chat || !confirm(`Delete “${chat.title}”?`)) return;
  if (state.live && state.live.chat === chat) state.live.abort.abort();
  state.chats = state.chats.filter((c) => c !== chat);
  if (state.currentId === id) state.currentId = null;
  saveChats();
  renderSidebar();
  renderChat();
}

function closeSidebar() {
  document.body.classList.remove('sidebar-open');
  $('#toggle-sidebar').setAttribute('aria-expanded', 'false');
}

// ---------------------------------------------------------------------------------------------
// Settings

const FIELDS = [
  // [element id, settings key, kind]
  ['api-key', 'apiKey', 'text'],
  ['system-prompt', 'system', 'text'],
  ['thinking', 'thinking', 'text'],
  ['temperature', 'temperature', 'float'],
  ['top-p', 'top_p', 'float'],
  ['top-k', 'top_k', 'int'],
  ['max-tokens', 'max_tokens', 'int'],
];

function openSettings(notice) {
  for (const [id, key] of FIELDS) $('#' + id).value = state.settings[key] ?? '';
  const n = $('#settings-notice');
  n.textContent = notice || '';
  n.hidden = !notice;
  const d = $('#settings');
  if (!d.open) d.showModal();
  (notice ? $('#api-key') : $('#system-prompt')).focus();
}

function saveSettings() {
  const s = {};
  for (const [id, key, kind] of FIELDS) {
    const raw = $('#' + id).value;
    if (kind === 'text') {
      if (raw.trim()) s[key] = key === 'apiKey' ? raw.trim() : raw;
    } else if (raw.trim() !== '') {
      const v = kind === 'int' ? parseInt(raw, 10) : parseFloat(raw);
      if (Number.isFinite(v)) s[key] = v;
    }
  }
  const keyChanged = s.apiKey !== state.settings.apiKey;
  state.settings = s;
  store(STORE.settings, s);
  $('#settings').close();
  if (keyChanged || !state.model) loadModel();
}

function authHeaders() {
  const h = {};
  if (state.settings.apiKey) h.Authorization = 'Bearer ' + state.settings.apiKey;
  return h;
}

// ---------------------------------------------------------------------------------------------
// Server

async function loadModel() {
  const el = $('#model');
  try {
    const res = await fetch('/v1/models', { headers: authHeaders() });
    if (res.status === 401) {
      el.textContent = 'API key needed';
      el.dataset.state = 'unauthorized';
      openSettings('This server needs an API key: enter it below.');
      return;
    }
    if (!res.ok) throw new Error(await errorMessage(res));
    const body = await res.json();
    state.model = body.data && body.data[0] ? body.data[0].id : null;
    el.textContent = state.model || 'no model';
    el.dataset.state = state.model ? 'ready' : 'error';
  } catch (e) {
    el.textContent = 'server unreachable';
    el.title = String(e.message || e);
    el.dataset.state = 'error';
  }
}

// The message of an OpenAI-shaped error body, or the status line.
async function errorMessage(res) {
  const text = await res.text().catch(() => '');
  try {
    const msg = JSON.parse(text).error.message;
    if (msg) return `${msg} (HTTP ${res.status})`;
  } catch {
    // Not JSON: fall through to the status.
  }
  return `HTTP ${res.status} ${res.statusText}` + (text ? `: ${text.slice(0, 200)}` : '');
}

function requestBody(chat) {
  const s = state.settings;
  const messages = [];
  if (s.system) messages.push({ role: 'system', content: s.system });
  for (const m of chat.messages) {
    // Failed or empty answers are left out; earlier reasoning is not sent back (as OpenAI's
    // and DeepSeek's guides ask).
    if (m.role === 'assistant' && (m.error || !m.content)) continue;
    if (m.state === 'streaming') continue;
    messages.push({ role: m.role, content: m.content });
  }
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  if (state.model) body.model = state.model;
  for (const key of ['temperature', 'top_p', 'top_k', 'max_tokens']) {
    if (s[key] !== undefined) body[key] = s[key];
  }
  // Templates with a thinking switch (Qwen3, DeepSeek R1) read it from the template's kwargs.
  if (s.thinking) body.chat_template_kwargs = { enable_thinking: s.thinking === 'on' };
  return body;
}

// Calls onEvent with each server-sent event's data (data: lines joined by newlines).
async function readSse(stream, onEvent) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    buf += done ? decoder.decode() : decoder.decode(value, { stream: true });
    const lines = buf.split(/\r\n|\r|\n/);
    buf = done ? '' : lines.pop(); // the last piece may be half a line
    for (const line of lines) {
      if (line === '') {
        if (data.length && onEvent(data.join('\n')) === false) return;
        data = [];
      } else if (line.startsWith('data:')) {
        data.push(line.slice(line[5] === ' ' ? 6 : 5));
      } // comments (":") and other fields are ignored
    }
    if (done) {
      if (data.length) onEvent(data.join('\n'));
      return;
    }
  }
}

// Applies one event to the answer; false at [DONE].
function applyEvent(live, data) {
  if (data === '[DONE]') return false;
  const chunk = JSON.parse(data);
  if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
  const msg = live.msg;
  if (chunk.usage) live.completionTokens = chunk.usage.completion_tokens;
  const choice = chunk.choices && chunk.choices[0];
  if (choice && choice.finish_reason) msg.finish = choice.finish_reason;
  const delta = choice && choice.delta;
  if (!delta) return true;
  const now = performance.now();
  if (delta.reasoning_content) {
    if (live.first === undefined) live.first = now;
    live.last = now;
    msg.reasoning += delta.reasoning_content;
    if (live.view) live.view.reasoning.open = true;
  }
  if (delta.content) {
    if (live.first === undefined) live.first = now;
    live.last = now;
    // The answer has started: fold the reasoning away (once, so a reader can reopen it).
    if (!msg.content && live.view) live.view.reasoning.open = false;
    msg.content += delta.content;
  }
  if (live.view) schedulePaint(live.view);
  return true;
}

// Tokens and decode speed: the tokens after the first over the time from first to last, which
// leaves out the wait for the prompt (time to first token). A short answer from a fast server can
// arrive in one read, with no time between first and last: then all tokens over the whole request.
function finishStats(live) {
  const n = live.completionTokens;
  if (n === undefined) return;
  let tps = null;
  if (live.last !== undefined && n > 1 && live.last - live.first >= 1) {
    tps = (n - 1) / ((live.last - live.first) / 1000);
  } else if (live.last !== undefined && live.last > live.sent) {
    tps = n / ((live.last - live.sent) / 1000);
  }
  live.msg.stats = { tokens: n, tps };
}

async function send(text) {
  if (state.live) return;
  let chat = currentChat();
  if (!chat) {
    chat = { id: newId(), title: titleOf(text), created: Date.now(), updated: Date.now(), messages: [] };
    state.chats.push(chat);
    state.currentId = chat.id;
  }
  chat.messages.push({ role: 'user', content: text });
  const msg = { role: 'assistant', content: '', reasoning: '', state: 'streaming' };
  chat.messages.push(msg);
  chat.updated = Date.now();
  const body = requestBody(chat);
  const live = { chat, msg, view: null, abort: new AbortController() };
  state.live = live;
  saveChats();
  renderSidebar();
  renderChat();
  setBusy(true);

  try {
    live.sent = performance.now();
    const res = await fetch('/v1/chat/completions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...authHeaders() },
      body: JSON.stringify(body),
      signal: live.abort.signal,
    });
    if (res.status === 401) {
      openSettings('The server refused the request: an API key is needed (or this one is wrong).');
    }
    if (!res.ok) throw new Error(await errorMessage(res));
    await readSse(res.body, (data) => applyEvent(live, data));
    msg.state = 'done';
  } catch (e) {
    if (e.name === 'AbortError') {
      msg.stopped = true;
      msg.state = 'done';
    } else {
      msg.error = String(e.message || e);
      msg.state = 'error';
    }
  } finally {
    live.abort.abort(); // closes the connection if an error left the stream unread
    finishStats(live);
    state.live = null;
    chat.updated = Date.now();
    saveChats();
    if (live.view) paint(live.view);
    setBusy(false);
  }
}

function setBusy(busy) {
  $('#send').hidden = busy;
  $('#stop').hidden = !busy;
  if (!busy) $('#input').focus();
}

// ---------------------------------------------------------------------------------------------
// Wiring

// The message box grows with its text up to 240px, then scrolls.
function growInput() {
  const input = $('#input');
  input.style.height = 'auto';
  const border = input.offsetHeight - input.clientHeight; // scrollHeight leaves out the border
  input.style.height = Math.min(input.scrollHeight + border, 240) + 'px';
  input.style.overflowY = input.scrollHeight + border > 240 ? 'auto' : 'hidden';
}

function submit() {
  const input = $('#input');
  const text = input.value.trim();
  if (!text || state.live) return;
  input.value = '';
  growInput();
  send(text);
}

async function copyCode(button) {
  const code = button.closest('.code').querySelector('code').textContent;
  try {
    await navigator.clipboard.writeText(code);
  } catch {
    // The clipboard API needs a secure context (not plain http to another host): select instead.
    const range = document.createRange();
    range.selectNodeContents(button.closest('.code').querySelector('code'));
    const sel = getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    document.execCommand('copy');
  }
  button.textContent = 'Copied';
  setTimeout(() => { button.textContent = 'Copy'; }, 1500);
}

function wire() {
  $('#composer').addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
  });
  $('#input').addEventListener('keydown', (e) => {
    // Enter sends; Shift+Enter is a newline; Enter while composing (IME) is not a send.
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  $('#input').addEventListener('input', growInput);
  $('#stop').addEventListener('click', () => state.live && state.live.abort.abort());
  $('#new-chat').addEventListener('click', newChat);
  $('#open-settings').addEventListener('click', () => openSettings());
  $('#settings-form').addEventListener('submit', (e) => {
    e.preventDefault();
    saveSettings();
  });
  $('#settings-cancel').addEventListener('click', () => $('#settings').close());
  $('#toggle-sidebar').addEventListener('click', () => {
    const open = document.body.classList.toggle('sidebar-open');
    $('#toggle-sidebar').setAttribute('aria-expanded', String(open));
  });
  $('#messages').addEventListener('click', (e) => {
    const b = e.target.closest('button.copy');
    if (b) copyCode(b);
  });
  // Another tab changed the chats: show its version (unless this tab is streaming into them).
  window.addEventListener('storage', (e) => {
    if (state.live || (e.key !== STORE.chats && e.key !== STORE.settings)) return;
    state.chats = load(STORE.chats, []);
    state.settings = load(STORE.settings, {});
    renderSidebar();
    renderChat();
  });
}

function init() {
  // An answer that was streaming when the page closed will never finish.
  for (const chat of state.chats) {
    for (const m of chat.messages) {
      if (m.state === 'streaming') {
        m.state = 'done';
        m.stopped = true;
      }
    }
  }
  if (!currentChat()) state.currentId = null;
  wire();
  growInput();
  renderSidebar();
  renderChat();
  loadModel();
  $('#input').focus();
}

init();
