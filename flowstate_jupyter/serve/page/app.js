// The page of a served flow: pick an action, fill a form built from its input model's JSON
// Schema, run it, and watch the session's client data change live (EventSource). No build
// step, no library. Every value from the server is shown as text (textContent), never as HTML.
"use strict";

const config = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
const state = { token: null, session: null, view: null, source: null, schema: null };

// -- talking to the server ------------------------------------------------------------------

function headers(withBody) {
  const h = {};
  if (withBody) h["content-type"] = "application/json";
  if (state.token) h["authorization"] = "Bearer " + state.token;
  return h;
}

async function api(method, path, body) {
  const init = { method, headers: headers(body !== undefined) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  let data = null;
  try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
  return { status: response.status, data };
}

function useToken(token) {
  state.token = token || null;
  if (token) sessionStorage.setItem("flowstate-token", token);
  else sessionStorage.removeItem("flowstate-token");
  // EventSource cannot send headers; the server takes this cookie on the event stream only.
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = config.cookie + "=" + encodeURIComponent(token || "") +
    "; path=/; SameSite=Strict" + secure + (token ? "" : "; max-age=0");
}

// -- the session and its live client data -----------------------------------------------------

function sessionFromHash() {
  const match = /(?:^#|&)session=([^&]+)/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

async function openSession(fresh) {
  let id = fresh ? null : sessionFromHash();
  if (!id) {
    const { status, data } = await api("POST", "sessions");
    if (status !== 201) return showAuthProblem(status, data);
    id = data.session_id;
    history.replaceState(null, "", "#session=" + encodeURIComponent(id));
  }
  state.session = id;
  $("session-id").textContent = id;
  connect();
}

function setStatus(kind, text) {
  $("status").dataset.state = kind;
  $("status").textContent = text;
}

function connect() {
  if (state.source) state.source.close();
  setStatus("connecting", "connecting");
  const source = new EventSource("sessions/" + encodeURIComponent(state.session) + "/events");
  state.source = source;
  const whole = (event) => {
    const view = JSON.parse(event.data);
    const before = flatten(state.view);
    state.view = view;
    render(changedKeys(before, flatten(view)));
    setStatus("live", "live");
  };
  source.addEventListener("snapshot", whole);
  source.addEventListener("resync", whole);
  source.addEventListener("client_data", (event) => {
    applyChanges(JSON.parse(event.data));
    setStatus("live", "live");
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      setStatus("offline", "offline");
      checkAccess();
    } else {
      setStatus("connecting", "reconnecting");
    }
  };
}

async function checkAccess() {
  // EventSource does not say why it failed: ask the snapshot route, which does.
  const { status, data } = await api("GET", "sessions/" + encodeURIComponent(state.session) +
                                     "/snapshot");
  if (status !== 200) showAuthProblem(status, data);
}

function applyChanges(change) {
  if (!state.view) return;
  const marked = new Set();
  for (const [section, scopes] of Object.entries(change.changed || {})) {
    for (const [scope, values] of Object.entries(scopes)) {
      const into = ((state.view[section] = state.view[section] || {})[scope] =
        state.view[section][scope] || {});
      for (const [key, value] of Object.entries(values)) {
        if (key in into && JSON.stringify(into[key]) === JSON.stringify(value)) continue;
        into[key] = value;
        marked.add(flatKey(section, scope, key));
      }
    }
  }
  for (const [section, scope, key] of change.removed || []) {
    if (state.view[section] && state.view[section][scope]) delete state.view[section][scope][key];
  }
  render(marked);
}

function flatKey(section, scope, key) {
  return section === "resources" ? scope + ".resources." + key : scope + "." + key;
}

function flatten(view) {
  const flat = new Map();
  if (!view) return flat;
  for (const [scope, values] of Object.entries(view.client_data || {})) {
    for (const [key, value] of Object.entries(values || {})) flat.set(flatKey("client_data", scope, key), value);
  }
  for (const [scope, values] of Object.entries(view.resources || {})) {
    for (const [key, entry] of Object.entries(values || {})) {
      flat.set(flatKey("resources", scope, key), entry ? entry.client_data : null);
    }
  }
  return flat;
}

function changedKeys(before, after) {
  const changed = new Set();
  if (before.size === 0) return changed;
  for (const [key, value] of after) {
    if (!before.has(key) || JSON.stringify(before.get(key)) !== JSON.stringify(value)) changed.add(key);
  }
  return changed;
}

function render(marked) {
  const body = $("client-data").tBodies[0];
  const rows = flatten(state.view);
  $("no-data").hidden = rows.size > 0;
  $("client-data").hidden = rows.size === 0;
  body.replaceChildren();
  for (const [key, value] of rows) {
    const tr = document.createElement("tr");
    tr.dataset.key = key;
    if (marked.has(key)) tr.className = "changed";
    const k = document.createElement("td");
    k.className = "key";
    k.textContent = key;
    const v = document.createElement("td");
    v.className = "value";
    const code = document.createElement("code");
    code.textContent = JSON.stringify(value);
    v.appendChild(code);
    tr.append(k, v);
    body.appendChild(tr);
  }
  if (marked.size) $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function showAuthProblem(status, data) {
  if (status === 401 || status === 403) {
    $("auth").hidden = false;
    $("auth-error").hidden = false;
    $("auth-error").textContent = (data && data.error) || "refused";
  }
  setStatus("offline", status === 401 ? "signed out" : "offline");
}

// -- forms from JSON Schema ------------------------------------------------------------------

function resolve(schema, root) {
  let seen = 0;
  while (schema && schema.$ref && seen++ < 20) {
    const path = schema.$ref.replace(/^#\//, "").split("/");
    let target = root;
    for (const part of path) target = target ? target[part] : undefined;
    schema = target ? { ...target, ...schema, $ref: undefined } : {};
  }
  return schema || {};
}

// A field's schema without its `null` alternative: [schema, nullable].
function unwrap(schema, root) {
  schema = resolve(schema, root);
  const options = schema.anyOf || schema.oneOf;
  if (options) {
    const rest = options.filter((o) => resolve(o, root).type !== "null");
    if (rest.length === 1) return [{ ...resolve(rest[0], root), title: schema.title,
                                     default: schema.default, description: schema.description }, true];
  }
  return [schema, false];
}

function buildForm(container, schema) {
  container.replaceChildren();
  const fields = [];
  if (!schema || schema.type !== "object" || !schema.properties) {
    const label = fieldLabel("input (JSON)", false);
    const area = document.createElement("textarea");
    area.name = "$json";
    area.placeholder = "{}";
    label.appendChild(area);
    container.appendChild(label);
    fields.push({ name: null, kind: "json", input: area, label });
    return fields;
  }
  const required = new Set(schema.required || []);
  for (const [name, raw] of Object.entries(schema.properties)) {
    const [prop, nullable] = unwrap(raw, schema);
    const label = fieldLabel(prop.title || name, required.has(name));
    if (prop.description) label.title = prop.description;
    let input, kind;
    if (Array.isArray(prop.enum)) {
      kind = "enum";
      input = document.createElement("select");
      if (!required.has(name) || nullable) input.appendChild(new Option("", ""));
      prop.enum.forEach((v, i) => input.appendChild(new Option(String(v), String(i))));
      if (prop.default !== undefined && prop.default !== null) {
        input.value = String(prop.enum.findIndex((v) => v === prop.default));
      }
      input.enumValues = prop.enum;
    } else if (prop.type === "boolean") {
      kind = "boolean";
      input = document.createElement("input");
      input.type = "checkbox";
      input.checked = prop.default === true;
      label.classList.add("check");
    } else if (prop.type === "integer" || prop.type === "number") {
      kind = prop.type;
      input = document.createElement("input");
      input.type = "number";
      input.step = prop.type === "integer" ? "1" : "any";
      if (prop.default !== undefined && prop.default !== null) input.value = prop.default;
    } else if (prop.type === "string") {
      kind = "string";
      input = document.createElement("input");
      input.type = "text";
      if (typeof prop.default === "string") input.value = prop.default;
    } else {
      kind = "json";
      input = document.createElement("textarea");
      if (prop.default !== undefined) input.value = JSON.stringify(prop.default);
    }
    input.name = name;
    label.appendChild(input);
    container.appendChild(label);
    fields.push({ name, kind, input, label, optional: !required.has(name) });
  }
  return fields;
}

function fieldLabel(text, required) {
  const label = document.createElement("label");
  label.className = "field" + (required ? " required" : "");
  const span = document.createElement("span");
  span.textContent = text;
  label.appendChild(span);
  return label;
}

function collect(fields) {
  if (fields.length === 1 && fields[0].name === null) {
    const text = fields[0].input.value.trim();
    return text ? JSON.parse(text) : null;
  }
  const value = {};
  for (const f of fields) {
    const raw = f.input.value;
    if (f.kind === "boolean") { value[f.name] = f.input.checked; continue; }
    if (raw === "" && f.optional) continue;
    if (f.kind === "enum") value[f.name] = raw === "" ? null : f.input.enumValues[Number(raw)];
    else if (f.kind === "integer" || f.kind === "number") value[f.name] = raw === "" ? null : Number(raw);
    else if (f.kind === "json") value[f.name] = raw.trim() === "" ? null : JSON.parse(raw);
    else value[f.name] = raw;
  }
  return value;
}

function showFieldErrors(fields, detail, box) {
  for (const f of fields) f.label.querySelector(".field-error")?.remove();
  const general = [];
  for (const e of detail || []) {
    const field = fields.find((f) => f.name !== null && f.name === String(e.loc[0]));
    if (field) {
      const p = document.createElement("div");
      p.className = "field-error";
      p.textContent = e.msg;
      field.label.appendChild(p);
    } else {
      general.push((e.loc.join(".") || "input") + ": " + e.msg);
    }
  }
  box.hidden = general.length === 0;
  box.textContent = general.join("; ");
}

// -- running actions ---------------------------------------------------------------------------

let inputFields = [];
let resumeFields = [];
let waitingRun = null;

function chooseAction() {
  const name = $("action").value;
  const action = config.actions[name];
  $("action-doc").textContent = (action && action.description) || "";
  inputFields = buildForm($("fields"), action ? action.schema : null);
}

function showResult(status, data) {
  $("result").hidden = false;
  const badge = $("result-status");
  const label = status === 200 ? data.status : (status === 422 ? "refused" : "error");
  badge.dataset.status = label;
  badge.textContent = label;
  $("result-request").textContent = data.request_id || "";
  let text;
  if (status !== 200) text = data.error || ("HTTP " + status);
  else if (data.status === "error") text = "the run failed (" + data.error.type + "); its " +
    "message is in the run's record on the server";
  else text = JSON.stringify(data.output, null, 2);
  $("result-output").textContent = text;
  if (status === 200 && data.client_data && state.view) {
    applyChanges({ changed: { client_data: data.client_data }, removed: [] });
  }
  waitingRun = status === 200 && data.status === "suspended" ? data.request_id : null;
  $("resume-form").hidden = !waitingRun;
  if (waitingRun) {
    $("resume-message").textContent = (data.suspension && data.suspension.message) || "";
    resumeFields = buildForm($("resume-fields"), data.suspension && data.suspension.schema);
  }
}

async function submit(event, fields, box, path, button) {
  event.preventDefault();
  let value;
  try {
    value = collect(fields);
  } catch (e) {
    box.hidden = false;
    box.textContent = "not JSON: " + e.message;
    return;
  }
  button.disabled = true;
  try {
    const { status, data } = await api("POST", path, value === null ? undefined : value);
    if (status === 401 || status === 403) showAuthProblem(status, data);
    showFieldErrors(fields, status === 422 ? data.detail : [], box);
    showResult(status, data);
  } catch (e) {
    box.hidden = false;
    box.textContent = "the server did not answer: " + e.message;
  } finally {
    button.disabled = false;
  }
}

// -- start -----------------------------------------------------------------------------------

function start() {
  $("flow-kind").textContent = config.kind;
  for (const name of Object.keys(config.actions)) $("action").appendChild(new Option(name, name));
  $("action").addEventListener("change", chooseAction);
  chooseAction();
  $("input-form").addEventListener("submit", (e) => submit(
    e, inputFields, $("form-error"),
    "sessions/" + encodeURIComponent(state.session) + "/actions/" +
      encodeURIComponent($("action").value), $("run")));
  $("resume-form").addEventListener("submit", (e) => submit(
    e, resumeFields, $("resume-error"), "runs/" + encodeURIComponent(waitingRun) + "/resume",
    e.submitter || $("resume-form").querySelector("button")));
  $("new-session").addEventListener("click", () => openSession(true));
  $("auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    useToken($("token").value.trim());
    $("auth-error").hidden = true;
    $("auth").hidden = true;
    openSession(false);
  });
  if (config.auth === "token") {
    const saved = sessionStorage.getItem("flowstate-token");
    if (!saved) {
      $("auth").hidden = false;
      setStatus("offline", "signed out");
      return;
    }
    useToken(saved);
  }
  openSession(false);
}

start();
