// ferrobase API reference: fetches the OpenAPI document and renders it with DOM APIs.
// Every piece of document text enters the page as a text node or attribute value, never
// as markup, and every link is a same-page fragment we build ourselves.
'use strict';

(() => {
  const SPEC_URL = '/api/v1/openapi.json';
  const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
  const MAX_DEPTH = 8; // how deep inline (non-$ref) schemas are expanded
  const COMBINATORS = [['allOf', ' & ', 'all of'], ['oneOf', ' | ', 'one of'], ['anyOf', ' | ', 'any of']];

  let doc = {};
  const usedIds = new Set(['sidebar', 'search', 'nav', 'content', 'status', 'schemas', 'security-schemes']);
  const schemaIds = new Map(); // component schema name -> element id
  const schemeIds = new Map(); // security scheme name -> element id

  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const str = (v) => (typeof v === 'string' ? v : JSON.stringify(v) ?? '');
  const own = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
  const entries = (o) => (isObj(o) ? Object.entries(o) : []);

  // Builds an element. `href` always becomes a fragment link to an id on this page.
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'href') el.setAttribute('href', '#' + encodeURIComponent(v));
      else el.setAttribute(k, String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children) {
      if (c == null || c === false) continue;
      if (Array.isArray(c)) append(el, c);
      else if (c instanceof Node) el.append(c);
      else el.append(document.createTextNode(String(c)));
    }
  }

  // A stable, unique, attribute-safe id derived from document text.
  function uniqueId(prefix, base) {
    const slug = prefix + '-' + String(base).replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^-+|-+$/g, '');
    let id = slug;
    for (let n = 2; usedIds.has(id); n++) id = slug + '-' + n;
    usedIds.add(id);
    return id;
  }

  const unescapePointer = (s) => s.replace(/~1/g, '/').replace(/~0/g, '~');

  // Resolves a local JSON pointer such as `#/components/schemas/User`.
  function lookup(ref) {
    if (typeof ref !== 'string' || !ref.startsWith('#/')) return undefined;
    let node = doc;
    for (const raw of ref.slice(2).split('/')) {
      let key;
      try { key = unescapePointer(decodeURIComponent(raw)); } catch { return undefined; }
      if (node === null || typeof node !== 'object' || !own(node, key)) return undefined;
      node = node[key];
    }
    return node;
  }

  // Follows `$ref` chains of parameters, responses, bodies and headers (bounded: refs may loop).
  function deref(obj) {
    for (let i = 0; i < 16 && isObj(obj) && typeof obj.$ref === 'string'; i++) obj = lookup(obj.$ref);
    return isObj(obj) ? obj : {};
  }

  // Descriptions stay plain text; only `backtick spans` become <code> (still text nodes).
  const desc = (text) => (text ? h('div', { class: 'desc' },
    str(text).split(/`([^`\n]+)`/).map((part, i) => (i % 2 ? h('code', {}, part) : part))) : null);
  const chip = (text, cls) => h('span', { class: 'chip' + (cls ? ' ' + cls : '') }, text);
  const reqBadge = () => h('span', { class: 'req', title: 'required' }, 'required');
  const methodBadge = (m) => h('span', { class: 'method m-' + m }, m.toUpperCase());
  const sub = (title, ...body) => h('div', { class: 'sub' }, h('h4', {}, title), body);

  function table(headers, rows) {
    return h('table', {},
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', {}, t)))),
      h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c) => h('td', {}, c))))));
  }

  function refLink(ref) {
    const m = /^#\/components\/schemas\/([^/]+)$/.exec(ref);
    if (!m) return h('code', { class: 'ref' }, ref);
    let name;
    try { name = unescapePointer(decodeURIComponent(m[1])); } catch { name = m[1]; }
    const id = schemaIds.get(name);
    return id ? h('a', { class: 'ref', href: id }, name)
      : h('span', { class: 'ref missing', title: 'unresolved reference' }, name);
  }

  const joinNodes = (parts, sep) => parts.flatMap((p, i) => (i ? [sep, ...p] : p));

  // A one-line type description: `string | null`, `array<User>`, `A & object`, ...
  function typeNodes(s, depth = 0) {
    if (s === false) return ['never'];
    if (!isObj(s)) return ['any'];
    if (depth > MAX_DEPTH) return ['…'];
    if (typeof s.$ref === 'string') return [refLink(s.$ref)];
    for (const [key, sep] of COMBINATORS) {
      if (Array.isArray(s[key]) && s[key].length) return joinNodes(s[key].map((p) => typeNodes(p, depth + 1)), sep);
    }
    let types = Array.isArray(s.type) ? s.type : s.type ? [s.type] : [];
    if (!types.length && isObj(s.properties)) types = ['object'];
    if (!types.length && s.items !== undefined) types = ['array'];
    const parts = types.map((t) => (t === 'array' ? ['array<', ...typeNodes(s.items, depth + 1), '>'] : [str(t)]));
    if (!types.length && own(s, 'const')) parts.push(['const ' + JSON.stringify(s.const)]);
    if (!types.length && Array.isArray(s.enum)) parts.push(['enum']);
    if (s.nullable === true) parts.push(['null']); // OpenAPI 3.0 style
    return parts.length ? joinNodes(parts, ' | ') : ['any'];
  }

  // Validation keywords and flags as small chips; `prefix` marks those of array items.
  function constraints(s, prefix = '') {
    if (!isObj(s) || typeof s.$ref === 'string') return [];
    const out = [];
    const add = (label, value, cls) => out.push(chip(prefix + label + (value === undefined ? '' : ': ' + value), cls));
    if (s.format) add('format', str(s.format));
    if (Array.isArray(s.enum)) add('enum', s.enum.map((v) => JSON.stringify(v)).join(', '));
    if (own(s, 'const') && s.type) add('const', JSON.stringify(s.const));
    if (s.pattern != null) add('pattern', str(s.pattern), 'mono');
    for (const key of ['minLength', 'maxLength', 'minimum', 'maximum', 'exclusiveMinimum',
      'exclusiveMaximum', 'multipleOf', 'minItems', 'maxItems', 'minProperties', 'maxProperties']) {
      if (s[key] != null) add(key, str(s[key]));
    }
    if (s.uniqueItems === true) add('uniqueItems');
    if (own(s, 'default')) add('default', JSON.stringify(s.default));
    for (const flag of ['readOnly', 'writeOnly', 'deprecated']) if (s[flag] === true) add(flag, undefined, 'flag');
    if (isObj(s.items) && !prefix) out.push(...constraints(s.items, 'items '));
    return out;
  }

  function propTable(s, depth) {
    const required = new Set(Array.isArray(s.required) ? s.required.map(String) : []);
    return table(['Property', 'Type', 'Details'], entries(s.properties).map(([name, p]) => [
      [h('code', { class: 'name' }, name), required.has(name) ? reqBadge() : null],
      h('span', { class: 'type' }, typeNodes(p, depth + 1)),
      [desc(isObj(p) ? p.description : null), constraints(p), schemaDetails(p, depth + 1)],
    ]));
  }

  // The structure of an inline schema (properties, combinations, items); null when flat.
  function schemaDetails(s, depth = 0) {
    if (!isObj(s) || typeof s.$ref === 'string' || depth > MAX_DEPTH) return null;
    const parts = [];
    if (isObj(s.properties) && Object.keys(s.properties).length) parts.push(propTable(s, depth));
    if (isObj(s.additionalProperties)) {
      parts.push(h('div', { class: 'extra' }, 'additional properties: ',
        h('span', { class: 'type' }, typeNodes(s.additionalProperties, depth + 1)),
        constraints(s.additionalProperties), schemaDetails(s.additionalProperties, depth + 1)));
    } else if (s.additionalProperties === false) {
      parts.push(h('div', { class: 'extra' }, 'no additional properties'));
    }
    for (const [key, , label] of COMBINATORS) {
      const list = Array.isArray(s[key]) ? s[key] : [];
      if (!list.some((p) => isObj(p) && typeof p.$ref !== 'string')) continue; // refs alone: the type line says it all
      parts.push(h('div', { class: 'combo' }, h('div', { class: 'label' }, label + ':'),
        h('ul', {}, list.map((p) => h('li', {}, schemaBlock(p, depth + 1))))));
    }
    const items = schemaDetails(s.items, depth + 1);
    if (items) parts.push(h('div', { class: 'combo' }, h('div', { class: 'label' }, 'items:'), items));
    return parts.length ? h('div', { class: 'details' }, parts) : null;
  }

  function schemaBlock(s, depth = 0) {
    return h('div', { class: 'schema' },
      h('div', { class: 'schema-head' }, h('span', { class: 'type' }, typeNodes(s, depth)), constraints(s)),
      desc(isObj(s) ? s.description : null),
      schemaDetails(s, depth));
  }

  function contentBlock(content) {
    return entries(content).map(([mediaType, media0]) => {
      const media = deref(media0);
      const example = own(media, 'example') ? media.example
        : entries(media.examples).map(([, ex]) => deref(ex).value).find((v) => v !== undefined);
      return h('div', { class: 'media' }, h('div', { class: 'media-type' }, mediaType),
        media.schema !== undefined ? schemaBlock(media.schema) : null,
        example !== undefined ? h('details', {}, h('summary', {}, 'Example'),
          h('pre', {}, JSON.stringify(example, null, 2))) : null);
    });
  }

  function paramsTable(params) {
    return table(['Name', 'In', 'Type', 'Details'], params.map((p) => {
      const schema = p.schema ?? entries(p.content).map(([, m]) => deref(m).schema)[0];
      return [
        [h('code', { class: 'name' }, str(p.name)), p.required ? reqBadge() : null],
        str(p.in ?? ''),
        h('span', { class: 'type' }, typeNodes(schema)),
        [desc(p.description), constraints(schema), p.deprecated ? chip('deprecated', 'flag') : null,
          schemaDetails(schema, 1)],
      ];
    }));
  }

  function responsesBlock(responses) {
    return entries(responses).map(([status, r0]) => {
      const r = deref(r0);
      const cls = /^[1-5]/.test(status) ? 's' + status[0] : 'sx';
      const headers = entries(r.headers).map(([name, h0]) => {
        const hd = deref(h0);
        return [[h('code', { class: 'name' }, name), hd.required ? reqBadge() : null],
          h('span', { class: 'type' }, typeNodes(hd.schema)), [desc(hd.description), constraints(hd.schema)]];
      });
      return h('div', { class: 'response' },
        h('div', { class: 'resp-head' }, h('span', { class: 'status ' + cls }, status), desc(r.description)),
        headers.length ? table(['Header', 'Type', 'Details'], headers) : null,
        contentBlock(r.content));
    });
  }

  function securityBlock(reqs) {
    if (!Array.isArray(reqs) || !reqs.length) return h('p', { class: 'muted' }, 'None: public');
    return h('ul', { class: 'security' }, reqs.map((req, i) => {
      const names = entries(req).map(([name, scopes]) => {
        const scopeText = Array.isArray(scopes) && scopes.length ? ' (' + scopes.map(str).join(', ') + ')' : '';
        const id = schemeIds.get(name);
        return [id ? h('a', { href: id }, name) : h('code', {}, name), scopeText];
      });
      return h('li', {}, i ? 'or ' : '', names.length ? joinNodes(names.map((n) => [n]), ' and ') : 'anonymous');
    }));
  }

  // Path-level parameters apply unless the operation redefines the same name and location.
  function mergeParams(shared, own_) {
    const out = new Map();
    for (const p0 of [...(Array.isArray(shared) ? shared : []), ...(Array.isArray(own_) ? own_ : [])]) {
      const p = deref(p0);
      out.set(str(p.in) + '\u0000' + str(p.name), p);
    }
    return [...out.values()];
  }

  function operationSection(o, id) {
    const { op, method, path } = o;
    const body = op.requestBody === undefined ? null : deref(op.requestBody);
    return h('section', { class: 'op', id },
      h('h3', {}, methodBadge(method), h('code', { class: 'path' }, path),
        op.deprecated ? chip('deprecated', 'flag') : null),
      op.summary ? h('p', { class: 'summary' }, str(op.summary)) : null,
      desc(op.description),
      op.operationId ? h('p', { class: 'muted' }, 'operationId: ', h('code', {}, str(op.operationId))) : null,
      sub('Security', securityBlock(op.security !== undefined ? op.security : doc.security)),
      o.params.length ? sub('Parameters', paramsTable(o.params)) : null,
      body ? sub(body.required ? 'Request body (required)' : 'Request body', desc(body.description),
        contentBlock(body.content)) : null,
      sub('Responses', responsesBlock(op.responses)));
  }

  function collectOperations() {
    const ops = [];
    for (const [path, item0] of entries(doc.paths)) {
      const item = deref(item0);
      for (const method of METHODS) {
        const op = item[method];
        if (!isObj(op)) continue;
        const tags = Array.isArray(op.tags) && op.tags.length ? op.tags.map(str) : ['default'];
        ops.push({ path, method, op, tags, params: mergeParams(item.parameters, op.parameters) });
      }
    }
    return ops;
  }

  function securitySchemesSection() {
    const rows = entries(doc.components?.securitySchemes).map(([name, s0]) => {
      const s = deref(s0);
      const facts = ['scheme', 'bearerFormat', 'in', 'name', 'openIdConnectUrl']
        .filter((k) => s[k] != null).map((k) => chip(k + ': ' + str(s[k])));
      const flows = entries(s.flows).map(([flow, f]) => chip('flow: ' + flow +
        (isObj(f) && isObj(f.scopes) && Object.keys(f.scopes).length ? ' (' + Object.keys(f.scopes).join(', ') + ')' : '')));
      return [h('code', { class: 'name', id: schemeIds.get(name) }, name), str(s.type ?? ''),
        [desc(s.description), facts, flows]];
    });
    return rows.length ? h('section', { class: 'group', id: 'security-schemes' },
      h('h2', {}, 'Security schemes'), table(['Name', 'Type', 'Details'], rows)) : null;
  }

  function render() {
    const content = document.getElementById('content');
    const nav = document.getElementById('nav');
    const info = isObj(doc.info) ? doc.info : {};
    for (const name of Object.keys(doc.components?.schemas ?? {})) schemaIds.set(name, uniqueId('schema', name));
    for (const name of Object.keys(doc.components?.securitySchemes ?? {})) schemeIds.set(name, uniqueId('scheme', name));
    if (info.title) document.title = str(info.title) + ' · API reference';

    const main = [h('header', { class: 'intro' },
      h('h1', {}, str(info.title ?? 'API reference'), info.version ? h('span', { class: 'version' }, str(info.version)) : null),
      doc.openapi ? h('p', { class: 'muted' }, 'OpenAPI ' + str(doc.openapi)) : null,
      desc(info.summary), desc(info.description),
      Array.isArray(doc.servers) && doc.servers.length
        ? h('p', { class: 'muted' }, 'Servers: ', joinNodes(doc.servers.map((s) => [h('code', {}, str(s?.url))]), ', ')) : null)];
    const navItems = [];
    const filterable = []; // { text, els } per operation/schema, for the search box
    const groups = []; // { els, members } per sidebar group

    const ops = collectOperations();
    const tagInfo = new Map();
    for (const t of Array.isArray(doc.tags) ? doc.tags : []) if (isObj(t) && t.name != null) tagInfo.set(str(t.name), t);
    for (const o of ops) for (const t of o.tags) if (!tagInfo.has(t)) tagInfo.set(t, { name: t });

    for (const [tag, t] of tagInfo) {
      const tagOps = ops.filter((o) => o.tags.includes(tag));
      if (!tagOps.length) continue;
      const tagId = uniqueId('tag', tag);
      const list = h('ul', {});
      const section = h('section', { class: 'group', id: tagId }, h('h2', {}, tag), desc(t.description));
      const members = [];
      for (const o of tagOps) {
        const id = uniqueId('op', o.op.operationId ?? o.method + '-' + o.path);
        const li = h('li', {}, h('a', { href: id }, methodBadge(o.method),
          h('span', { class: 'nav-label' }, str(o.op.summary ?? o.path))));
        const sec = operationSection(o, id);
        list.append(li);
        section.append(sec);
        const text = [o.method, o.path, o.op.summary, o.op.operationId, o.op.description, tag].map(str).join(' ');
        members.push({ text: text.toLowerCase(), els: [li, sec] });
      }
      filterable.push(...members);
      const group = h('div', { class: 'nav-group' }, h('a', { class: 'nav-tag', href: tagId }, tag), list);
      navItems.push(group);
      groups.push({ els: [section, group], members });
      main.push(section);
    }

    const schemas = entries(doc.components?.schemas);
    if (schemas.length) {
      const list = h('ul', {});
      const section = h('section', { class: 'group', id: 'schemas' }, h('h2', {}, 'Schemas'));
      const members = schemas.map(([name, s]) => {
        const li = h('li', {}, h('a', { href: schemaIds.get(name) }, h('span', { class: 'nav-label' }, name)));
        const sec = h('section', { class: 'op schema-def', id: schemaIds.get(name) }, h('h3', {}, name), schemaBlock(s));
        list.append(li);
        section.append(sec);
        return { text: ('schema ' + name).toLowerCase(), els: [li, sec] };
      });
      filterable.push(...members);
      const group = h('div', { class: 'nav-group' }, h('a', { class: 'nav-tag', href: 'schemas' }, 'Schemas'), list);
      navItems.push(group);
      groups.push({ els: [section, group], members });
      main.push(section);
    }
    main.push(securitySchemesSection());
    if (!ops.length && !schemas.length) main.push(h('p', { class: 'muted' }, 'The document describes no operations.'));

    content.replaceChildren(...main.filter(Boolean));
    nav.replaceChildren(...navItems);
    wireSearch(filterable, groups);
    if (location.hash.length > 1) {
      let target = null;
      try { target = document.getElementById(decodeURIComponent(location.hash.slice(1))); } catch { /* bad hash */ }
      target?.scrollIntoView();
    }
  }

  function wireSearch(filterable, groups) {
    const input = document.getElementById('search');
    const apply = () => {
      const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      const visible = new Set();
      for (const item of filterable) {
        const show = words.every((w) => item.text.includes(w));
        for (const el of item.els) el.hidden = !show;
        if (show) visible.add(item);
      }
      for (const g of groups) {
        const show = g.members.some((m) => visible.has(m));
        for (const el of g.els) el.hidden = !show;
      }
    };
    input.addEventListener('input', apply);
    document.addEventListener('keydown', (e) => {
      if (e.key === '/' && document.activeElement !== input) { e.preventDefault(); input.focus(); }
      else if (e.key === 'Escape' && document.activeElement === input) { input.value = ''; apply(); }
    });
    apply();
  }

  async function load() {
    const status = document.getElementById('status');
    try {
      const res = await fetch(SPEC_URL, { headers: { Accept: 'application/json' }, credentials: 'same-origin' });
      if (!res.ok) throw new Error('HTTP ' + res.status);
      const body = await res.json();
      if (!isObj(body)) throw new Error('the document is not a JSON object');
      doc = body;
      render();
    } catch (err) {
      if (status) status.textContent = 'Could not load the API description (' + SPEC_URL + '): ' + (err?.message ?? err);
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', load);
  else load();
})();
