// ferrobase GraphQL page: a query editor, the response, and a schema panel built from
// introspection. Everything the server sends enters the page as text nodes or attribute
// values, never as markup; nothing is fetched but this origin's /api/v1 endpoints.
'use strict';

(() => {
  const ENDPOINT = '/api/v1/graphql';
  const ME = '/api/v1/auth/me'; // answers a cookie session's CSRF token in X-CSRF-Token
  const ACCEPT = 'application/graphql-response+json, application/json';
  const KEY = {
    query: 'ferrobase.graphql.query',
    variables: 'ferrobase.graphql.variables',
    operation: 'ferrobase.graphql.operationName',
    token: 'ferrobase.graphql.token',
  };
  const DEFAULT_QUERY = '# Write a query, e.g. { posts(first: 5) { edges { node { id } } } }\n'
    + '# Run it with the button or Ctrl/Cmd+Enter; a field under Schema inserts a skeleton.\n'
    + '{\n  __typename\n}\n';
  const TYPE_REF = 'fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name '
    + 'ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }';
  const INTROSPECTION = 'query IntrospectionQuery { __schema { queryType { name } mutationType { name } '
    + 'subscriptionType { name } types { name kind description fields { name args { name type { ...TypeRef } } '
    + 'type { ...TypeRef } } inputFields { name type { ...TypeRef } } enumValues { name } } } }\n' + TYPE_REF;
  const LISTED_KINDS = new Set(['OBJECT', 'INTERFACE', 'UNION', 'INPUT_OBJECT', 'ENUM']);
  const RELAY = new Set(['edges', 'node', 'pageInfo']); // followed by skeletons
  const MAX_HIGHLIGHT = 200000; // characters; larger bodies are shown plain

  const $ = (id) => document.getElementById(id);
  const ui = {
    run: $('run'), runKey: $('run-key'), query: $('query'), variables: $('variables'),
    operation: $('operation'), token: $('token'), clearToken: $('clear-token'), auth: $('auth-state'),
    meta: $('meta'), errors: $('errors'), output: $('output'),
    reload: $('reload-schema'), filter: $('schema-filter'), schema: $('schema-body'),
  };
  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  let types = new Map(); // introspected types by name
  let csrf; // undefined: not asked yet; null: none to be had; else the cookie session's token
  let busy = false;

  // Builds an element; `href` always becomes a fragment link to an id on this page.
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'href') el.setAttribute('href', '#' + encodeURIComponent(v));
      else el.setAttribute(k, String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c == null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  // Storage may be switched off (or throw on access): the page then simply forgets.
  function load(store, key, fallback) {
    try { const v = window[store].getItem(key); return v == null ? fallback : v; } catch { return fallback; }
  }
  function save(store, key, value) {
    try { if (value) window[store].setItem(key, value); else window[store].removeItem(key); } catch { /* off */ }
  }

  // Replaces the text of the selection (or the whole field) keeping the browser's undo history.
  function insertText(el, text, whole) {
    el.focus();
    if (whole) el.select();
    let done = false;
    try { done = document.execCommand('insertText', false, text); } catch { done = false; }
    if (!done || (whole && el.value !== text)) {
      if (whole) el.value = text;
      else el.setRangeText(text, el.selectionStart, el.selectionEnd, 'end');
    }
    el.dispatchEvent(new Event('input'));
  }

  // --- The operations of a document ------------------------------------------------------

  // Lists [{type, name}] of a document's operations, skipping comments, strings, fragments.
  function operations(src) {
    const ops = [];
    let depth = 0, parens = 0, pending = null, i = 0;
    while (i < src.length) {
      const c = src[i];
      if (c === '#') { while (i < src.length && src[i] !== '\n') i++; continue; }
      if (c === '"') {
        if (src.startsWith('"""', i)) { const end = src.indexOf('"""', i + 3); i = end < 0 ? src.length : end + 3; continue; }
        for (i++; i < src.length && src[i] !== '"' && src[i] !== '\n'; i += src[i] === '\\' ? 2 : 1);
        i++;
        continue;
      }
      if (/[_A-Za-z@]/.test(c)) {
        let j = i + 1;
        while (j < src.length && /[_0-9A-Za-z]/.test(src[j])) j++;
        const word = src.slice(i, j);
        i = j;
        if (depth || parens || word[0] === '@') continue;
        if (!pending && (word === 'query' || word === 'mutation' || word === 'subscription')) pending = { type: word, name: null };
        else if (!pending && word === 'fragment') pending = { fragment: true };
        else if (pending && !pending.fragment && pending.name === null) pending.name = word;
        continue;
      }
      if (c === '(') parens++;
      else if (c === ')') parens = Math.max(0, parens - 1);
      else if (c === '{' && !parens) {
        if (!depth) {
          if (!pending) ops.push({ type: 'query', name: null });
          else if (!pending.fragment) ops.push(pending);
          pending = null;
        }
        depth++;
      } else if (c === '}' && !parens) depth = Math.max(0, depth - 1);
      i++;
    }
    return ops;
  }

  // 'query', 'mutation' or 'subscription': what running `src` (as `name`) would do.
  function operationType(src, name) {
    const ops = operations(src).filter((o) => !name || o.name === name);
    if (!ops.length) return 'query'; // let the server explain what is wrong
    return ops.find((o) => o.type !== 'query')?.type ?? 'query';
  }

  // --- Talking to the server -------------------------------------------------------------

  const bearer = () => ui.token.value.trim().replace(/^bearer\s+/i, '');

  function authNote(text) { ui.auth.textContent = text; }

  // The cookie session's CSRF token, asked once of /auth/me (null without a session).
  async function csrfToken(force) {
    if (csrf !== undefined && !force) return csrf;
    csrf = null;
    try {
      const res = await fetch(ME, { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } });
      if (res.ok) csrf = res.headers.get('x-csrf-token') || null;
      if (!bearer()) {
        authNote(res.ok ? 'Using this browser\u2019s signed-in session.'
          : res.status === 401 ? 'Not signed in: requests run anonymously. Sign in, or paste a token.'
            : 'Could not read the session (HTTP ' + res.status + '): queries go by GET, mutations by POST.');
      }
    } catch {
      if (!bearer()) authNote('Could not read the session: queries go by GET, mutations by POST.');
    }
    return csrf;
  }

  // Sends one operation. Queries of a cookie session without a CSRF token go by GET (which
  // needs none); everything else by POST. A refused CSRF token is fetched again once.
  async function execute(query, variables, operationName) {
    const kind = operationType(query, operationName);
    const token = bearer();
    for (let attempt = 0; ; attempt++) {
      const headers = { Accept: ACCEPT };
      const sessionCsrf = token ? null : await csrfToken(attempt > 0);
      let url = ENDPOINT, method = 'POST', body;
      if (token) headers.Authorization = 'Bearer ' + token;
      if (kind === 'query' && !token && !sessionCsrf) {
        const params = new URLSearchParams({ query });
        if (variables) params.set('variables', JSON.stringify(variables));
        if (operationName) params.set('operationName', operationName);
        url += '?' + params;
        method = 'GET';
      } else {
        headers['Content-Type'] = 'application/json';
        if (sessionCsrf) headers['X-CSRF-Token'] = sessionCsrf;
        body = JSON.stringify({ query, variables: variables || null, operationName: operationName || null });
      }
      const started = performance.now();
      const res = await fetch(url, {
        method, headers, body, cache: 'no-store', credentials: token ? 'omit' : 'same-origin',
      });
      const text = await res.text();
      const ms = performance.now() - started;
      if (attempt === 0 && !token && res.status === 403 && /csrf/i.test(text)) continue;
      let json;
      try { json = JSON.parse(text); } catch { json = undefined; }
      return { status: res.status, statusText: res.statusText, ms, method, text, json };
    }
  }

  // The errors of a GraphQL response, or of a REST-style error body (the auth layer's).
  function errorsOf(json) {
    if (!isObj(json)) return [];
    if (Array.isArray(json.errors)) return json.errors.filter(isObj);
    if (isObj(json.error)) {
      const e = json.error;
      return [{ message: e.message, extensions: { code: e.code, fields: isObj(e.details) ? e.details.fields : undefined } }];
    }
    return [];
  }

  // --- Showing a response ----------------------------------------------------------------

  function showMessage(text) {
    ui.meta.replaceChildren(h('span', { class: 'badge bad' }, 'not sent'));
    ui.errors.replaceChildren(h('p', { class: 'error-note' }, text));
  }

  function fieldList(fields) {
    if (isObj(fields)) {
      return h('ul', { class: 'err-fields' }, Object.entries(fields).map(([name, msgs]) =>
        h('li', {}, h('code', {}, name), ': ', Array.isArray(msgs) ? msgs.join('; ') : String(msgs))));
    }
    if (Array.isArray(fields)) {
      return h('ul', { class: 'err-fields' }, fields.map((f) => h('li', {}, typeof f === 'string' ? f : JSON.stringify(f))));
    }
    return null;
  }

  function renderErrors(errors) {
    if (!errors.length) { ui.errors.replaceChildren(); return; }
    ui.errors.replaceChildren(h('ul', { class: 'error-list', 'aria-label': 'Errors' }, errors.map((e) => {
      const ext = isObj(e.extensions) ? e.extensions : {};
      const where = [];
      if (Array.isArray(e.path)) where.push('at ' + e.path.join('.'));
      if (Array.isArray(e.locations)) {
        where.push(...e.locations.filter(isObj).map((l) => 'line ' + l.line + ', column ' + l.column));
      }
      return h('li', {},
        ext.code != null ? h('span', { class: 'badge bad' }, String(ext.code)) : null, ' ',
        h('span', { class: 'err-msg' }, e.message == null ? '(no message)' : String(e.message)),
        where.length ? h('span', { class: 'muted' }, ' \u2014 ' + where.join('; ')) : null,
        fieldList(ext.fields));
    })));
  }

  // Pretty JSON with keys, strings, numbers and literals in their own (text) spans.
  const TOKEN = /("(?:[^"\\]|\\.)*")(\s*:)?|\b(?:true|false|null)\b|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;
  function showJson(text) {
    if (text.length > MAX_HIGHLIGHT) { ui.output.textContent = text; return; }
    const frag = document.createDocumentFragment();
    let last = 0;
    for (const m of text.matchAll(TOKEN)) {
      frag.append(text.slice(last, m.index));
      if (m[1] && m[2]) {
        frag.append(h('span', { class: m[1] === '"errors"' ? 'j-key j-err' : 'j-key' }, m[1]), m[2]);
      } else {
        frag.append(h('span', { class: m[1] ? 'j-str' : /^[tfn]/.test(m[0]) ? 'j-lit' : 'j-num' }, m[0]));
      }
      last = m.index + m[0].length;
    }
    frag.append(text.slice(last));
    ui.output.replaceChildren(frag);
  }

  function showResult(r) {
    const cls = r.status < 300 ? 'ok' : r.status < 500 ? 'warn' : 'bad';
    ui.meta.replaceChildren(
      h('span', { class: 'badge ' + cls }, (r.status + ' ' + r.statusText).trim()),
      h('span', { class: 'muted' }, Math.round(r.ms) + ' ms \u00b7 ' + r.method));
    const errors = errorsOf(r.json);
    renderErrors(errors);
    ui.output.classList.toggle('has-errors', errors.length > 0);
    if (r.json === undefined) ui.output.textContent = r.text || '(empty body)';
    else showJson(JSON.stringify(r.json, null, 2));
  }

  async function run() {
    if (busy) return;
    const query = ui.query.value;
    const op = ui.operation.value.trim();
    let variables = null;
    const raw = ui.variables.value.trim();
    if (raw) {
      try { variables = JSON.parse(raw); } catch (e) { showMessage('Variables are not valid JSON: ' + e.message); return; }
      if (!isObj(variables)) { showMessage('Variables must be a JSON object, such as {"id": "\u2026"}.'); return; }
    }
    if (operationType(query, op) === 'subscription') {
      showMessage('Subscriptions run over a WebSocket (graphql-transport-ws on ' + ENDPOINT + '); this page runs queries and mutations.');
      return;
    }
    busy = true;
    ui.run.setAttribute('aria-busy', 'true');
    ui.meta.replaceChildren(h('span', { class: 'muted' }, 'Running\u2026'));
    try {
      showResult(await execute(query, variables, op || null));
    } catch (e) {
      showMessage('The request failed: ' + (e?.message ?? e));
    } finally {
      busy = false;
      ui.run.removeAttribute('aria-busy');
    }
  }

  // --- The schema panel -----------------------------------------------------------------

  const unwrap = (ref) => { while (ref && ref.ofType && (ref.kind === 'NON_NULL' || ref.kind === 'LIST')) ref = ref.ofType; return ref || {}; };
  const sdl = (ref) => (!ref ? '?' : ref.kind === 'NON_NULL' ? sdl(ref.ofType) + '!'
    : ref.kind === 'LIST' ? '[' + sdl(ref.ofType) + ']' : String(ref.name ?? '?'));
  const listed = (name) => LISTED_KINDS.has(types.get(name)?.kind) && !String(name).startsWith('__');

  // A type as SDL, its named part linking to the type's entry in the panel.
  function typeNodes(ref) {
    const text = sdl(ref), name = unwrap(ref).name;
    const at = name == null ? -1 : text.indexOf(name);
    if (at < 0 || !listed(name)) return h('span', { class: 'type' }, text);
    return h('span', { class: 'type' }, text.slice(0, at),
      h('a', { href: 'type-' + name, 'data-type': name }, name), text.slice(at + name.length));
  }

  function argNodes(args) {
    if (!Array.isArray(args) || !args.length) return null;
    return ['(', args.map((a, i) => [i ? ', ' : '', h('span', { class: 'arg' }, a.name), ': ', typeNodes(a.type)]), ')'];
  }

  // The leaf fields of a type, following Relay's edges/node/pageInfo (a starting point).
  function selection(ref, indent, depth) {
    const t = types.get(unwrap(ref).name);
    if (!t || t.kind === 'SCALAR' || t.kind === 'ENUM') return '';
    const pad = '  '.repeat(indent + 1), lines = [];
    for (const f of t.fields || []) {
      if (f.name.startsWith('__') || (f.args || []).some((a) => a.type?.kind === 'NON_NULL')) continue;
      const kind = types.get(unwrap(f.type).name)?.kind;
      if (kind === 'SCALAR' || kind === 'ENUM') lines.push(pad + f.name);
      else if (RELAY.has(f.name) && depth < 4) lines.push(pad + f.name + selection(f.type, indent + 1, depth + 1));
    }
    if (!lines.length) lines.push(pad + '__typename');
    return ' {\n' + lines.join('\n') + '\n' + '  '.repeat(indent) + '}';
  }

  // A value of the right shape for a required variable.
  function placeholder(ref, depth) {
    if (ref?.kind === 'NON_NULL') return placeholder(ref.ofType, depth);
    if (!ref || ref.kind === 'LIST') return [];
    const t = types.get(ref.name) || ref;
    if (t.kind === 'ENUM') return t.enumValues?.[0]?.name ?? '';
    if (t.kind === 'INPUT_OBJECT') {
      const o = {};
      if (depth < 3) for (const f of t.inputFields || []) if (f.type?.kind === 'NON_NULL') o[f.name] = placeholder(f.type, depth + 1);
      return o;
    }
    return ref.name === 'Int' || ref.name === 'Float' ? 0 : ref.name === 'Boolean' ? false : '';
  }

  // Puts a skeleton operation for a root field into the editor (undo brings the old one back).
  function insertSkeleton(kind, field) {
    const required = (field.args || []).filter((a) => a.type?.kind === 'NON_NULL');
    const opName = field.name.charAt(0).toUpperCase() + field.name.slice(1);
    const defs = required.length ? '(' + required.map((a) => '$' + a.name + ': ' + sdl(a.type)).join(', ') + ')' : '';
    const call = required.length ? '(' + required.map((a) => a.name + ': $' + a.name).join(', ') + ')' : '';
    const vars = Object.fromEntries(required.map((a) => [a.name, placeholder(a.type, 0)]));
    insertText(ui.variables, required.length ? JSON.stringify(vars, null, 2) : '', true);
    insertText(ui.operation, '', true);
    insertText(ui.query, kind + ' ' + opName + defs + ' {\n  ' + field.name + call + selection(field.type, 1, 0) + '\n}\n', true);
  }

  function rootSection(kind, type) {
    const fields = (type.fields || []).filter((f) => !f.name.startsWith('__'));
    return h('section', { class: 'root' },
      h('h3', {}, kind.charAt(0).toUpperCase() + kind.slice(1), ' ', h('span', { class: 'muted' }, type.name)),
      h('ul', { class: 'fields' }, fields.map((f) => {
        const name = kind === 'subscription' ? h('span', { class: 'fname' }, f.name)
          : h('button', { type: 'button', class: 'fname link', title: 'Insert a ' + kind + ' for ' + f.name }, f.name);
        if (name.tagName === 'BUTTON') name.addEventListener('click', () => insertSkeleton(kind, f));
        return h('li', { 'data-name': f.name.toLowerCase() }, name, argNodes(f.args), ': ', typeNodes(f.type));
      })));
  }

  function typeEntry(t) {
    let rows;
    if (t.kind === 'ENUM') rows = (t.enumValues || []).map((v) => h('li', {}, h('span', { class: 'fname' }, v.name)));
    else if (t.kind === 'INPUT_OBJECT') rows = (t.inputFields || []).map((f) => h('li', {}, h('span', { class: 'fname' }, f.name), ': ', typeNodes(f.type)));
    else rows = (t.fields || []).map((f) => h('li', {}, h('span', { class: 'fname' }, f.name), argNodes(f.args), ': ', typeNodes(f.type)));
    const keyword = { OBJECT: 'type', INTERFACE: 'interface', UNION: 'union', INPUT_OBJECT: 'input', ENUM: 'enum' }[t.kind];
    return h('details', { id: 'type-' + t.name, class: 'type-entry', 'data-name': t.name.toLowerCase() },
      h('summary', {}, h('span', { class: 'kw' }, keyword), ' ', h('span', { class: 'tname' }, t.name)),
      t.description ? h('p', { class: 'muted desc' }, String(t.description)) : null,
      rows.length ? h('ul', { class: 'fields' }, rows) : null);
  }

  function renderSchema(s) {
    types = new Map(s.types.filter((t) => isObj(t) && typeof t.name === 'string').map((t) => [t.name, t]));
    const roots = [['query', s.queryType], ['mutation', s.mutationType], ['subscription', s.subscriptionType]]
      .map(([kind, ref]) => [kind, ref && types.get(ref.name)]).filter(([, t]) => t);
    const rootNames = new Set(roots.map(([, t]) => t.name));
    const others = [...types.values()].filter((t) => listed(t.name) && !rootNames.has(t.name))
      .sort((a, b) => a.name.localeCompare(b.name));
    ui.schema.replaceChildren(
      ...roots.map(([kind, t]) => rootSection(kind, t)),
      others.length ? h('section', { class: 'types' }, h('h3', {}, 'Types'), others.map(typeEntry)) : null);
    applyFilter();
  }

  function introspectionOff(detail) {
    ui.schema.replaceChildren(h('div', { class: 'note' },
      h('p', {}, 'Introspection is disabled on this server; enable it with ',
        h('code', {}, '[graphql] introspection = true'), ' in ', h('code', {}, 'ferrobase.toml'), '.'),
      detail ? h('p', { class: 'muted' }, 'The server said: ', detail) : null));
  }

  async function loadSchema() {
    ui.schema.replaceChildren(h('p', { class: 'muted' }, 'Loading the schema\u2026'));
    try {
      const r = await execute(INTROSPECTION, null, 'IntrospectionQuery');
      const errors = errorsOf(r.json);
      const schema = r.json?.data?.__schema;
      if (errors.length) introspectionOff(String(errors[0].message ?? ''));
      else if (!isObj(schema) || !Array.isArray(schema.types)) {
        ui.schema.replaceChildren(h('p', { class: 'note' }, 'Could not load the schema (HTTP ' + r.status + ').'));
      } else renderSchema(schema);
    } catch (e) {
      ui.schema.replaceChildren(h('p', { class: 'note' }, 'Could not load the schema: ' + (e?.message ?? e)));
    }
  }

  function applyFilter() {
    const term = ui.filter.value.trim().toLowerCase();
    for (const el of ui.schema.querySelectorAll('[data-name]')) el.hidden = Boolean(term) && !el.dataset.name.includes(term);
  }

  // --- Wiring ----------------------------------------------------------------------------

  // Tab indents in the code fields; Esc, then Tab, moves focus on as usual.
  function codeKeys(el) {
    let escaped = false;
    el.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') { escaped = true; return; }
      if (e.key === 'Tab' && !e.shiftKey && !e.ctrlKey && !e.altKey && !e.metaKey && !escaped) {
        e.preventDefault();
        insertText(el, '  ', false);
      }
      escaped = false;
    });
  }

  function start() {
    ui.query.value = load('localStorage', KEY.query, DEFAULT_QUERY);
    ui.variables.value = load('localStorage', KEY.variables, '');
    ui.operation.value = load('localStorage', KEY.operation, '');
    ui.token.value = load('sessionStorage', KEY.token, '');
    if (/Mac|iPhone|iPad/.test(navigator.userAgent)) ui.runKey.textContent = '\u2318+Enter';

    ui.query.addEventListener('input', () => save('localStorage', KEY.query, ui.query.value));
    ui.variables.addEventListener('input', () => save('localStorage', KEY.variables, ui.variables.value));
    ui.operation.addEventListener('input', () => save('localStorage', KEY.operation, ui.operation.value));
    const tokenChanged = () => {
      save('sessionStorage', KEY.token, bearer());
      if (bearer()) authNote('Sending this token as Authorization: Bearer (kept in this tab only).');
      else csrfToken(true);
    };
    ui.token.addEventListener('change', tokenChanged);
    ui.clearToken.addEventListener('click', () => { ui.token.value = ''; tokenChanged(); ui.token.focus(); });
    codeKeys(ui.query);
    codeKeys(ui.variables);
    ui.run.addEventListener('click', run);
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); }
    });
    ui.reload.addEventListener('click', loadSchema);
    ui.filter.addEventListener('input', applyFilter);
    // A type link opens its entry before the browser scrolls to it.
    ui.schema.addEventListener('click', (e) => {
      const a = e.target.closest('a[data-type]');
      const entry = a && document.getElementById('type-' + a.dataset.type);
      if (entry) entry.open = true;
    });

    if (bearer()) authNote('Sending this token as Authorization: Bearer (kept in this tab only).');
    (bearer() ? Promise.resolve() : csrfToken()).then(loadSchema);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
