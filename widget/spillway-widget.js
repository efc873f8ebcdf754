// <spillway-widget api="https://…/functions/v1/spillway" token="…" refresh="30">
// Spillway's dashboard as a custom element: no build step, no dependencies. Every value
// shown comes from the API and is written with textContent, never as HTML.

const STYLE = `
:host { --bg: #ffffff; --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --card: #f6f8fa;
  --accent: #0b5cad; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --active: #0b5cad;
  display: block; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif;
  color: var(--fg); background: var(--bg); container-type: inline-size; }
* { box-sizing: border-box; }
.wrap { max-width: 1200px; margin: 0 auto; padding: 16px; display: grid; gap: 16px; }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px; }
h1 { font-size: 1.35rem; margin: 0; }
h2 { font-size: 1rem; margin: 0 0 10px; }
.grow { flex: 1 1 auto; }
.muted { color: var(--muted); font-size: .875rem; }
.badge { display: inline-block; padding: 2px 8px; border-radius: 999px; font-size: .75rem; font-weight: 700; letter-spacing: .04em; border: 1px solid currentColor; }
.badge.active { color: #fff; background: var(--active); border-color: var(--active); }
.badge.standby { color: var(--muted); }
.phase-normal { color: var(--ok); } .phase-backup { color: var(--warn); } .phase-critical { color: var(--bad); }
.grid { display: grid; gap: 16px; grid-template-columns: repeat(2, minmax(0, 1fr)); }
@container (max-width: 720px) { .grid { grid-template-columns: minmax(0, 1fr); } }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px; min-width: 0; }
.card-head { display: flex; align-items: center; gap: 8px; margin-bottom: 8px; }
.card-head h2 { margin: 0; text-transform: capitalize; }
.gauge { position: relative; height: 14px; border-radius: 7px; background: #e4e8ec; overflow: hidden; margin: 8px 0 4px; }
.gauge .fill { position: absolute; inset: 0 auto 0 0; background: var(--ok); }
.gauge .fill.backup { background: var(--warn); } .gauge .fill.critical { background: var(--bad); }
.gauge .mark { position: absolute; top: 0; bottom: 0; width: 2px; background: var(--fg); opacity: .7; }
.figures { display: flex; justify-content: space-between; gap: 8px; flex-wrap: wrap; font-variant-numeric: tabular-nums; }
.flags { display: flex; gap: 6px; flex-wrap: wrap; margin-top: 6px; }
.flag { font-size: .75rem; padding: 1px 6px; border-radius: 4px; background: #fff; border: 1px solid var(--line); }
.flag.bad { color: var(--bad); border-color: var(--bad); }
dl { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 4px 12px; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; font-variant-numeric: tabular-nums; }
button, select, input { font: inherit; }
button { border: 1px solid var(--line); background: #fff; color: var(--fg); border-radius: 6px; padding: 6px 12px; cursor: pointer; min-height: 36px; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
button.danger { background: var(--bad); border-color: var(--bad); color: #fff; }
button:disabled { opacity: .55; cursor: not-allowed; }
button:focus-visible, select:focus-visible, input:focus-visible { outline: 3px solid #0969da; outline-offset: 2px; }
.actions { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
.result { min-height: 1.4em; font-size: .9rem; }
.result.error { color: var(--bad); } .result.ok { color: var(--ok); }
svg { width: 100%; height: auto; display: block; }
.events { list-style: none; margin: 0; padding: 0; display: grid; gap: 4px; max-height: 320px; overflow: auto; }
.events li { display: grid; grid-template-columns: max-content max-content minmax(0, 1fr); gap: 8px; font-size: .85rem; padding: 4px 6px; border-radius: 4px; background: #fff; border-left: 4px solid var(--line); }
.events li.info { border-left-color: var(--accent); } .events li.warn { border-left-color: var(--warn); } .events li.error { border-left-color: var(--bad); }
.events .lvl { font-weight: 700; text-transform: uppercase; font-size: .7rem; padding-top: 2px; }
.events li.warn .lvl { color: var(--warn); } .events li.error .lvl { color: var(--bad); }
.events .msg { overflow-wrap: anywhere; }
.events li.outcome { font-weight: 600; border-left-width: 6px; }
.events li.outcome.ok { background: #dafbe1; border-left-color: var(--ok); }
.events li.outcome.bad { background: #ffebe9; border-left-color: var(--bad); }
.events .tag { display: inline-block; margin-right: 6px; padding: 0 6px; border-radius: 4px; font-size: .7rem; letter-spacing: .04em; color: #fff; }
.events li.outcome.ok .tag { background: var(--ok); } .events li.outcome.bad .tag { background: var(--bad); }
@container (max-width: 520px) { .events li { grid-template-columns: max-content minmax(0, 1fr); } .events .msg { grid-column: 1 / -1; } }
form.settings { display: grid; gap: 10px; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); align-items: start; }
.field.wide { grid-column: span 2; }
@container (max-width: 520px) { .field.wide { grid-column: auto; } }
.field { display: grid; gap: 4px; }
.field input[type=number], .field select { padding: 6px 8px; border: 1px solid var(--line); border-radius: 6px; background: #fff; width: 100%; }
.field.check { grid-template-columns: max-content 1fr; align-items: center; }
.field .err { color: var(--bad); font-size: .8rem; min-height: 1em; }
.banner { padding: 10px 14px; border-radius: 8px; border: 1px solid var(--line); background: var(--card); }
.banner.error { border-color: var(--bad); color: var(--bad); background: #fff5f5; }
dialog { border: 1px solid var(--line); border-radius: 10px; padding: 18px; max-width: min(92vw, 440px); }
dialog::backdrop { background: rgba(0, 0, 0, .35); }
.token-form { display: grid; gap: 8px; max-width: 420px; }
.token-form input { padding: 8px; border: 1px solid var(--line); border-radius: 6px; width: 100%; }
.health { font-size: .8rem; font-weight: 700; letter-spacing: .04em; padding: 3px 10px; border-radius: 999px; color: #fff; }
.health.ok { background: var(--ok); } .health.degraded { background: var(--warn); } .health.critical { background: var(--bad); }
.reasons { margin: 0; padding: 10px 14px 10px 32px; border-radius: 8px; border: 1px solid var(--warn); background: #fff8c5; display: grid; gap: 4px; }
.reasons.critical { border-color: var(--bad); background: #ffebe9; }
.after-switch { margin-top: 6px; font-size: .9rem; }
.after-switch.tight { color: var(--bad); font-weight: 600; }
details.basis { font-size: .8rem; color: var(--muted); } details.basis summary { cursor: pointer; }
.banner.live { border-color: var(--accent); background: #ddf4ff; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; font-size: .85rem; margin: 4px 0 8px; }
.legend .key { display: inline-block; width: 18px; height: 0; border-top: 3px solid var(--active); vertical-align: middle; margin-right: 6px; }
.legend .key.standby { border-top: 3px dashed #8c959f; }
.refused { color: var(--bad); font-weight: 600; }
.force { display: grid; gap: 6px; margin: 10px 0; }
.force input { padding: 6px 8px; border: 1px solid var(--line); border-radius: 6px; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

const UNITS = ["B", "KB", "MB", "GB", "TB"];

// Events an operator looks for first: how each backup and switch ended.
const OUTCOMES = {
  "backup.succeeded": { tag: "BACKUP", ok: true },
  "backup.failed": { tag: "BACKUP FAILED", ok: false },
  "backup.verify_failed": { tag: "BACKUP FAILED", ok: false },
  "backup.unreachable": { tag: "BACKUP FAILED", ok: false },
  "switch.completed": { tag: "SWITCH", ok: true },
  "switch.forced": { tag: "FORCED SWITCH", ok: false },
  "switch.failed": { tag: "SWITCH FAILED", ok: false },
  "switch.rolled_back": { tag: "SWITCH FAILED", ok: false },
  "switch.refused": { tag: "SWITCH REFUSED", ok: false },
};

function bytes(n) {
  if (n === null || n === undefined) return "?";
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u += 1;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${UNITS[u]}`;
}

function pct(x) {
  return x === null || x === undefined ? "?" : `${(x * 100).toFixed(1)} %`;
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// The settings' names as the form shows them.
const SETTING_LABELS = {
  backupThreshold: "backup threshold",
  switchThreshold: "switch threshold",
  "quotaBytes.primary": "primary quota",
  "quotaBytes.secondary": "secondary quota",
  quotaBytes: "quotas",
  strategy: "backup strategy",
  autoBackup: "automatic backup",
  autoSwitch: "automatic switch",
  authSessions: "keeping users signed in",
};

// The server's field errors in the form's words: each under its field (an error naming two
// settings under both), thresholds in % as the form takes them.
function humanErrors(details) {
  const out = {};
  for (const [key, message] of Object.entries(details || {})) {
    let text = String(message).replace(
      /\b(backupThreshold|switchThreshold) \(([\d.]+)\)/g,
      (_, k, v) => `the ${SETTING_LABELS[k]} (${+(Number(v) * 100).toFixed(2)} %)`,
    );
    if (/Threshold$/.test(key)) text = text.replace(/^must be at most 1$/, "must be at most 100 %");
    text = text.replace(/(?<![\w.])(quotaBytes\.\w+|[a-z]+[A-Z]\w*)/g, (k) => SETTING_LABELS[k] ?? k);
    text = text.charAt(0).toUpperCase() + text.slice(1);
    const keys = [key, ...Object.keys(SETTING_LABELS).filter((k) => k !== key && String(message).includes(`${k} (`))];
    for (const k of keys) if (!out[k]?.includes(text)) out[k] = out[k] ? `${out[k]}; ${text}` : text;
  }
  return out;
}

function progressText(run) {
  const p = run.progress || {};
  return `${p.phase ?? "starting"}${p.table ? ` (${p.table})` : ""}: ${p.tablesDone ?? 0} of ${p.tablesTotal ?? "?"} tables, ${(p.rows ?? 0).toLocaleString()} rows, ${bytes(p.bytes ?? 0)}`;
}

function days(d) {
  return d < 1 ? `about ${Math.max(1, Math.round(d * 24))} h` : `about ${d.toFixed(1)} days`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export class SpillwayWidget extends HTMLElement {
  static get observedAttributes() {
    return ["api", "token", "refresh"];
  }

  constructor() {
    super();
    this.root = this.attachShadow({ mode: "open" });
    this.state = {
      status: null,
      config: null,
      events: [],
      level: "",
      loading: true,
      error: null,
      unauthorized: false,
      busy: null,
      result: null,
      fieldErrors: {},
    };
    this.timer = null;
  }

  connectedCallback() {
    this.render();
    this.refreshNow();
  }

  disconnectedCallback() {
    clearTimeout(this.timer);
  }

  attributeChangedCallback(name, before, after) {
    if (before === after || !this.isConnected) return;
    if (name === "refresh") this.schedule();
    else this.refreshNow();
  }

  get api() {
    return (this.getAttribute("api") || "").replace(/\/+$/, "");
  }
  // The token may be given as a property, which (unlike the attribute) stays out of the markup.
  get token() {
    return this._token ?? (this.getAttribute("token") || "");
  }
  set token(value) {
    this._token = value;
    if (this.isConnected) this.refreshNow();
  }

  // Every 2 s while something runs (a backup, a switch, a phase other than normal): an
  // operation of seconds must not fall between two refreshes. Otherwise every `refresh` s.
  pollSeconds() {
    const st = this.state.status;
    const running =
      this.state.busy !== null ||
      (st && (st.phase !== "normal" || st.lastBackup?.status === "running" || st.projects[st.active]?.fenced === true));
    return running ? 2 : Math.max(5, Number(this.getAttribute("refresh")) || 30);
  }

  schedule() {
    clearTimeout(this.timer);
    if (!this.isConnected) return;
    this.timer = setTimeout(() => this.refreshNow(), this.pollSeconds() * 1000);
  }

  async call(method, path, body) {
    let res;
    try {
      res = await fetch(`${this.api}${path}`, {
        method,
        headers: { Authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, "UNREACHABLE", `The Spillway API at ${this.api || "(no URL)"} cannot be reached.`);
    }
    let json = null;
    try {
      json = await res.json();
    } catch {
      /* a body that is not JSON is reported below */
    }
    if (!res.ok) {
      const e = json?.error ? json.error : {};
      throw new ApiError(res.status, e.code || `HTTP_${res.status}`, e.message || `The API answered ${res.status}.`, e.details);
    }
    return json;
  }

  // A request the API refuses until it is confirmed (409 CONFIRM_REQUIRED for settings that
  // would leave data behind or act at once, TARGET_UNFIT for a backup the standby has no room
  // for) is asked about, and sent again with `flag` only when the operator agrees.
  async callConfirmed(method, path, body, code, flag, yes) {
    try {
      return await this.call(method, path, body);
    } catch (e) {
      if (e.status !== 409 || e.code !== code) throw e;
      const lines = Array.isArray(e.details?.consequences) ? e.details.consequences : [e.message];
      if (!(await this.ask("This needs your confirmation", lines, yes)))
        throw new ApiError(409, "CANCELLED", "Cancelled; nothing changed.");
      return await this.call(method, path, { ...body, [flag]: true });
    }
  }

  ask(title, lines, yes) {
    const dialog = el(
      "dialog",
      { id: "confirm-consequence", "aria-labelledby": "cc-h" },
      el(
        "form",
        { method: "dialog" },
        el("h2", { id: "cc-h", text: title }),
        lines.map((text) => el("p", { text })),
        el(
          "div",
          { class: "actions" },
          el("button", { value: "cancel", id: "confirm-consequence-no", text: "Cancel" }),
          el("button", { value: "confirm", class: "danger", id: "confirm-consequence-yes", text: yes }),
        ),
      ),
    );
    this.root.append(dialog);
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) =>
      dialog.addEventListener(
        "close",
        () => {
          dialog.remove();
          resolve(dialog.returnValue === "confirm");
        },
        { once: true },
      ),
    );
  }

  async refreshNow() {
    if (!this.api) {
      this.state = { ...this.state, loading: false, error: "No API URL is set." };
      return this.render();
    }
    try {
      const level = this.state.level ? `&level=${encodeURIComponent(this.state.level)}` : "";
      const [status, config, logs] = await Promise.all([
        this.call("GET", "/status"),
        this.call("GET", "/config"),
        this.call("GET", `/logs?limit=30${level}`),
      ]);
      this.state = {
        ...this.state,
        status,
        config,
        events: logs.events,
        loading: false,
        error: null,
        unauthorized: false,
        updatedAt: new Date(),
      };
    } catch (e) {
      this.state = { ...this.state, loading: false, unauthorized: e.status === 401, error: e.status === 401 ? null : e.message };
      if (e.status === 401) this.dispatchEvent(new CustomEvent("spillway-unauthorized", { bubbles: true, composed: true }));
    }
    this.render();
    this.schedule();
  }

  async operate(kind) {
    const status = this.state.status;
    const dialog = this.root.getElementById(kind === "switch" ? "confirm-switch" : "confirm-backup");
    dialog.returnValue = "";
    dialog.showModal();
    const answer = await new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true }));
    if (answer !== "confirm" && answer !== "force") return this.render();
    const force = answer === "force";
    this.state = {
      ...this.state,
      busy: kind,
      result: { ok: true, text: kind === "backup" ? "Backing up…" : `Switching to ${status.standby}…` },
    };
    this.render();
    try {
      if (kind === "backup") {
        const { run } = await this.callConfirmed("POST", "/force-backup", { mode: "auto" }, "TARGET_UNFIT", "force", "Back up anyway");
        this.state.result =
          run.status === "running"
            ? {
                ok: true,
                text: `Backup continues: ${run.progress.tablesDone ?? 0} of ${run.progress.tablesTotal ?? "?"} tables staged; the next call or tick goes on.`,
              }
            : { ok: true, text: `Backup ${run.status}: ${run.rows} rows, ${bytes(run.bytes)} in ${(run.durationMs / 1000).toFixed(1)} s.` };
      } else {
        const { switch: s } = await this.call(
          "POST",
          "/force-switch",
          force ? { to: status.standby, force: true } : { to: status.standby },
        );
        this.state.result = {
          ok: true,
          text: `${s.to} is now active (epoch ${s.epoch}); writes were blocked for ${s.writesBlockedMs} ms.`,
        };
      }
    } catch (e) {
      this.state.result = { ok: false, text: `${e.code}: ${e.message}` };
    }
    this.state.busy = null;
    await this.refreshNow();
  }

  async saveSettings(form) {
    const data = new FormData(form);
    // What was typed stays in the form when the save fails.
    const draft = Object.fromEntries(
      [...form.elements].filter((e) => e.name).map((e) => [e.name, e.type === "checkbox" ? e.checked : e.value]),
    );
    const number = (name, scale = 1) => {
      const raw = String(data.get(name) ?? "").trim();
      return raw === "" ? raw : Number(raw) / scale;
    };
    const patch = {
      backupThreshold: number("backupThreshold", 100),
      switchThreshold: number("switchThreshold", 100),
      quotaBytes: {
        primary: Math.round(number("quotaPrimary") * 1024 * 1024),
        secondary: Math.round(number("quotaSecondary") * 1024 * 1024),
      },
      autoBackup: data.get("autoBackup") === "on",
      autoSwitch: data.get("autoSwitch") === "on",
      authSessions: data.get("authSessions") === "on",
      strategy: data.get("strategy"),
    };
    if (Number.isNaN(patch.quotaBytes.primary)) patch.quotaBytes.primary = String(data.get("quotaPrimary"));
    if (Number.isNaN(patch.quotaBytes.secondary)) patch.quotaBytes.secondary = String(data.get("quotaSecondary"));
    this.settingsDirty = false;
    this.state = { ...this.state, busy: "settings", fieldErrors: {}, settingsResult: null };
    this.render();
    try {
      await this.callConfirmed("PATCH", "/config", patch, "CONFIRM_REQUIRED", "confirm", "Save anyway");
      this.state.settingsResult = { ok: true, text: "Settings saved." };
      this.state.settingsDraft = null;
    } catch (e) {
      this.state.fieldErrors = humanErrors(e.details && typeof e.details === "object" ? e.details : {});
      this.state.settingsDraft = draft;
      const n = Object.keys(e.details || {}).length;
      this.state.settingsResult = {
        ok: false,
        text:
          e.code === "INVALID_CONFIG"
            ? `Not saved: ${n === 1 ? "one field needs" : `${n} fields need`} a change (see below).`
            : `Not saved: ${e.message}`,
      };
    }
    this.state.busy = null;
    await this.refreshNow();
  }

  render() {
    // A confirmation in progress is not replaced under the operator's cursor.
    if (this.root.querySelector("dialog[open]")) return;
    const s = this.state;
    const root = this.root;
    const focused = root.activeElement?.id;
    root.replaceChildren(el("style", { text: STYLE }));
    const wrap = el("div", { class: "wrap" });
    root.append(wrap);

    const status = s.status;
    wrap.append(
      el(
        "header",
        {},
        el("h1", { text: "Spillway" }),
        status ? el("span", { class: `health ${status.health.state}`, id: "health", text: `health: ${status.health.state}` }) : null,
        status ? el("span", { class: `badge phase-${status.phase}`, text: `phase: ${status.phase}` }) : null,
        status ? el("span", { class: "muted", text: `active ${status.active} · epoch ${status.epoch}` }) : null,
        el("span", { class: "grow" }),
        el("span", {
          class: "muted",
          "aria-live": "polite",
          id: "updated",
          text: s.loading ? "Loading…" : s.updatedAt ? `Updated ${s.updatedAt.toLocaleTimeString()} · every ${this.pollSeconds()} s` : "",
        }),
        el("button", { id: "refresh", type: "button", onclick: () => this.refreshNow(), text: "Refresh" }),
      ),
    );

    if (s.unauthorized) {
      wrap.append(this.tokenPrompt());
      return;
    }
    if (s.error)
      wrap.append(
        el("div", {
          class: "banner error",
          role: "alert",
          text: `${s.error} Retrying every ${Math.max(5, Number(this.getAttribute("refresh")) || 30)} s.`,
        }),
      );
    if (!status) {
      if (s.loading) wrap.append(el("div", { class: "banner", text: "Loading Spillway's status…" }));
      return;
    }

    if (status.health.reasons.length > 0) {
      wrap.append(
        el(
          "ul",
          { class: `reasons ${status.health.state}`, id: "health-reasons", "aria-label": "What needs attention" },
          status.health.reasons.map((r) => el("li", { "data-code": r.code, text: r.message })),
        ),
      );
    }
    const switching = s.busy === "switch" || status.projects[status.active].fenced === true;
    const running = status.lastBackup?.status === "running" ? status.lastBackup : null;
    if (switching || running || s.busy === "backup") {
      wrap.append(
        el("div", {
          class: "banner live",
          id: "under-way",
          role: "status",
          text: switching
            ? `Switch under way: writes to ${status.active} wait while ${status.standby} catches up; apps move to ${status.standby} once it is published.`
            : `Backup under way to ${status.standby}${running ? `: ${progressText(running)}` : "…"}`,
        }),
      );
    }

    const grid = el("div", { class: "grid" });
    for (const name of ["primary", "secondary"]) grid.append(this.projectCard(name, status));
    wrap.append(grid);

    const ops = el(
      "section",
      { class: "card", "aria-labelledby": "ops-h" },
      el("h2", { id: "ops-h", text: "Operations" }),
      el(
        "div",
        { class: "actions" },
        el("button", {
          id: "force-backup",
          type: "button",
          class: "primary",
          disabled: s.busy !== null,
          onclick: () => this.operate("backup"),
          text: s.busy === "backup" ? "Backing up…" : "Force backup",
        }),
        el("button", {
          id: "force-switch",
          type: "button",
          class: "danger",
          disabled: s.busy !== null,
          onclick: () => this.operate("switch"),
          text: s.busy === "switch" ? "Switching…" : "Switch active project",
        }),
      ),
      el("p", {
        class: `result ${s.result ? (s.result.ok ? "ok" : "error") : ""}`,
        role: "status",
        "aria-live": "polite",
        id: "op-result",
        text: s.result ? s.result.text : "",
      }),
      this.switchDialog(status),
      this.backupDialog(status),
    );
    const backup = this.backupPanel(status);
    wrap.append(el("div", { class: "grid" }, ops, backup));
    wrap.append(el("div", { class: "grid" }, this.historyPanel(status), this.eventsPanel()));
    // Settings being edited survive the auto-refresh.
    if (s.config) wrap.append(this.settingsDirty && this.settingsNode ? this.settingsNode : this.settingsPanel(s.config.settings));
    const chart = root.getElementById("usage-chart");
    if (chart) this.drawChart(chart, status);
    if (focused) root.getElementById(focused)?.focus();
  }

  projectCard(name, status) {
    const p = status.projects[name];
    const active = status.active === name;
    const usageClass =
      p.usage === null ? "" : p.usage >= status.thresholds.switch ? "critical" : p.usage >= status.thresholds.backup ? "backup" : "";
    const gauge = el(
      "div",
      {
        class: "gauge",
        role: "meter",
        "aria-label": `${name} usage`,
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": p.usage === null ? 0 : Math.round(p.usage * 100),
      },
      el("div", { class: `fill ${usageClass}`, style: `width:${Math.min(100, (p.usage || 0) * 100)}%` }),
      el("div", { class: "mark", title: "backup threshold", style: `left:${status.thresholds.backup * 100}%` }),
      el("div", { class: "mark", title: "switch threshold", style: `left:${status.thresholds.switch * 100}%` }),
    );
    return el(
      "section",
      { class: "card project", "data-project": name, "aria-labelledby": `p-${name}` },
      el(
        "div",
        { class: "card-head" },
        el("h2", { id: `p-${name}`, text: name }),
        el("span", { class: `badge role ${active ? "active" : "standby"}`, text: active ? "ACTIVE" : "STANDBY" }),
        el("span", { class: "grow" }),
        el("span", { class: p.reachable ? "muted" : "flag bad", text: p.reachable ? "reachable" : "unreachable" }),
      ),
      gauge,
      el(
        "div",
        { class: "figures" },
        el("span", { class: "used", text: `${bytes(p.usedBytes)} of ${bytes(p.quotaBytes)}` }),
        el("strong", { class: "usage", text: pct(p.usage) }),
      ),
      el("div", { class: "muted", text: `marks: backup ${pct(status.thresholds.backup)}, switch ${pct(status.thresholds.switch)}` }),
      typeof p.users !== "number" ? null : el("div", { class: "users", text: `${p.users} ${p.users === 1 ? "user" : "users"} in Auth` }),
      this.storageLine(name, status),
      this.realtimeLine(name, status),
      active ? null : this.afterSwitchNote(status),
      el(
        "div",
        { class: "flags" },
        p.readOnly ? el("span", { class: "flag bad", text: "read-only" }) : null,
        p.fenced ? el("span", { class: "flag", text: "fenced" }) : null,
        p.error ? el("span", { class: "flag bad", text: p.error }) : null,
      ),
    );
  }

  // Storage: the project's objects against Storage's own quota and when they were last
  // carried here, or why Storage is not carried.
  storageLine(name, status) {
    const st = status.storage;
    if (!st) return null;
    const p = st.projects[name];
    if (!st.carried) return el("div", { class: "storage muted", text: `Storage not carried: ${st.reason}` });
    if (!p) return el("div", { class: "storage muted", text: "Storage: none here" });
    const copied = p.lastCopied ? `, last copied here ${when(p.lastCopied.at)}` : "";
    return el("div", {
      class: "storage",
      text: `Storage: ${p.objects} ${p.objects === 1 ? "object" : "objects"}, ${bytes(p.bytes)} of ${bytes(p.quotaBytes)}${copied}`,
    });
  }

  // Realtime: the tables the project publishes; channels moved here at a switch hear only these.
  realtimeLine(name, status) {
    const rt = status.realtime;
    if (!rt) return null;
    const p = rt.projects[name];
    const text = p
      ? `Realtime: ${p.publishedTables.length} ${p.publishedTables.length === 1 ? "table" : "tables"} published`
      : "Realtime: no publication";
    return el(
      "div",
      { class: "realtime" },
      el("span", { text }),
      rt.inStep ? null : el("span", { class: "flag bad", text: "differs from the other project" }),
    );
  }

  afterSwitchNote(status) {
    const a = status.afterSwitch;
    if (!a) return el("div", { class: "after-switch muted", text: "After a switch: unknown while a project cannot be read." });
    const room =
      a.headroomBytes >= 0
        ? `${bytes(a.headroomBytes)} below its switch threshold`
        : `${bytes(-a.headroomBytes)} over its switch threshold`;
    const tight = a.usage >= status.thresholds.backup;
    return el(
      "div",
      {},
      el("div", {
        class: `after-switch${tight ? " tight" : ""}`,
        text: `After a switch: ${pct(a.usage)} (${bytes(a.usedBytes)}), ${room}${a.days === null ? "" : `, ${days(a.days)} at ${status.active}'s growth`}`,
      }),
      el("details", { class: "basis" }, el("summary", { text: "How this is estimated" }), el("p", { text: a.basis })),
    );
  }

  backupPanel(status) {
    const b = status.lastBackup;
    // The record a switch leaves (both sides equal at that moment) is not a backup that ran.
    if (b?.details && b.details.origin === "switch") {
      return el(
        "section",
        { class: "card", id: "last-backup", "aria-labelledby": "lb-h" },
        el("h2", { id: "lb-h", text: `Last backup to ${status.standby}` }),
        el("p", {
          class: "in-step",
          text: `In step at the switch: ${status.standby} held the same data as ${status.active} when ${status.active} became active (${when(b.finishedAt)}); no backup has run since.`,
        }),
        el(
          "dl",
          {},
          el("dt", { text: "Standby lag" }),
          el("dd", { "data-field": "standby-lag", text: status.standbyLagSeconds === null ? "unknown" : `${status.standbyLagSeconds} s` }),
        ),
      );
    }
    const rows = b
      ? [
          ["When", when(b.finishedAt || b.startedAt)],
          ["Kind", b.kind],
          ["Status", b.status],
          ["Rows", b.rows.toLocaleString()],
          ["Size", bytes(b.bytes)],
          ["Duration", b.durationMs === null ? "—" : `${(b.durationMs / 1000).toFixed(1)} s`],
        ]
      : [];
    if (b && b.status === "running") rows.push(["Progress", progressText(b)]);
    if (b?.error) rows.push(["Error", b.error]);
    rows.push(["Standby lag", status.standbyLagSeconds === null ? "unknown" : `${status.standbyLagSeconds} s`]);
    return el(
      "section",
      { class: "card", id: "last-backup", "aria-labelledby": "lb-h" },
      el("h2", { id: "lb-h", text: `Last backup to ${status.standby}` }),
      b ? null : el("p", { class: "muted", text: "No backup yet." }),
      el(
        "dl",
        {},
        rows.flatMap(([k, v]) => [
          el("dt", { text: k }),
          el("dd", { "data-field": k.toLowerCase().replace(/\s+/g, "-"), text: String(v) }),
        ]),
      ),
    );
  }

  historyPanel(status) {
    const chart = svg("svg", {
      id: "usage-chart",
      role: "img",
      "aria-label": `usage history of ${status.active} and ${status.standby}, as a share of each one's quota`,
    });
    const f = status.forecast;
    const span = f.samples.spanMs < 120_000 ? `${Math.round(f.samples.spanMs / 1000)} s` : `${Math.round(f.samples.spanMs / 60_000)} min`;
    const growth =
      f.bytesPerHour === null
        ? `no forecast yet: ${f.reason || "not enough samples"}`
        : `${f.bytesPerHour < 0 ? "−" : "+"}${bytes(Math.abs(f.bytesPerHour))}/h, from ${f.samples.count} samples over ${span}${f.samples.spreadBytes === null ? "" : ` (spread ±${bytes(Math.round(f.samples.spreadBytes))})`}`;
    const at = (iso, crossed) => (crossed ? `crossed at ${when(iso)}` : iso ? when(iso) : "not forecast");
    return el(
      "section",
      { class: "card", "aria-labelledby": "h-h" },
      el("h2", { id: "h-h", text: `Usage history of ${status.active}` }),
      el(
        "div",
        { class: "legend" },
        el("span", {}, el("span", { class: "key" }), `${status.active} (active)`),
        el("span", {}, el("span", { class: "key standby" }), `${status.standby} (standby)`),
      ),
      chart,
      el(
        "dl",
        {},
        el("dt", { text: "Growth" }),
        el("dd", { "data-field": "growth", text: growth }),
        el("dt", { text: "Backup threshold" }),
        el("dd", { "data-field": "backup-at", text: at(f.backupAt, f.crossed.backup) }),
        el("dt", { text: "Switch threshold" }),
        el("dd", { "data-field": "switch-at", text: at(f.switchAt, f.crossed.switch) }),
      ),
    );
  }

  // Drawn once the chart is on the page, at its real width: one SVG unit is one CSS pixel,
  // so labels keep their size on a phone.
  drawChart(chart, status) {
    const W = Math.max(240, Math.round(chart.getBoundingClientRect().width) || 600);
    const H = 210;
    const L = 8;
    const R = 8;
    const T = 8;
    const B = 26;
    chart.setAttribute("viewBox", `0 0 ${W} ${H}`);
    chart.setAttribute("height", H);
    const series = [status.active, status.standby].map((name) => ({
      name,
      quota: status.projects[name].quotaBytes,
      samples: status.samples[name] || [],
    }));
    const all = series.flatMap((x) => x.samples.map((p) => ({ t: Date.parse(p.at), u: p.usedBytes / x.quota })));
    const low = Math.max(0, Math.floor((Math.min(status.thresholds.backup, ...all.map((p) => p.u)) - 0.1) * 10) / 10);
    const y = (u) => T + (H - T - B) * (1 - (Math.min(1, Math.max(low, u)) - low) / (1 - low));
    chart.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fff", stroke: "#d0d7de" }));
    // Labels go on last, each on a white outline, so that no line crosses their letters.
    const labels = [];
    const text = (x, yy, label, attrs = {}) => {
      const node = svg("text", { x, y: yy, "font-size": 12, stroke: "#fff", "stroke-width": 3, "paint-order": "stroke", ...attrs });
      node.textContent = label;
      labels.push(node);
    };
    // The two thresholds are a few pixels apart: the switch label sits above its line and the
    // backup label below its own, so they never overlap.
    for (const [name, t, color, dy] of [
      ["backup", status.thresholds.backup, "#9a6700", 13],
      ["switch", status.thresholds.switch, "#cf222e", -3],
    ]) {
      chart.append(svg("line", { x1: L, x2: W - R, y1: y(t), y2: y(t), stroke: color, "stroke-dasharray": "6 4" }));
      text(L + 4, y(t) + dy, `${name} ${Math.round(t * 100)}%`, { fill: color });
    }
    text(W - R - 4, T + 13, "100%", { fill: "#57606a", "text-anchor": "end" });
    text(W - R - 4, H - B - 4, `${Math.round(low * 100)}%`, { fill: "#57606a", "text-anchor": "end" });
    if (all.length === 0) return chart.append(...labels);
    const t0 = Math.min(...all.map((p) => p.t));
    const t1 = Math.max(...all.map((p) => p.t));
    const x = (t) => L + (W - L - R) * (t1 === t0 ? 1 : (t - t0) / (t1 - t0));
    // A time axis: a label at each end and, where there is room, between them.
    const short = t1 - t0 < 10 * 60_000;
    const fmt = (t) =>
      new Date(t).toLocaleTimeString(
        undefined,
        short ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" },
      );
    const n = W >= 480 ? 4 : 3;
    const marks = t1 === t0 ? [t1] : Array.from({ length: n }, (_, i) => t0 + ((t1 - t0) * i) / (n - 1));
    marks.forEach((t, i) => {
      const anchor = marks.length === 1 || i === marks.length - 1 ? "end" : i === 0 ? "start" : "middle";
      chart.append(svg("line", { x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4, stroke: "#57606a" }));
      text(x(t), H - 8, fmt(t), { fill: "#57606a", "text-anchor": anchor, class: "time-label" });
    });
    for (const [i, sr] of series.entries()) {
      if (sr.samples.length === 0) continue;
      const d = sr.samples
        .map((p, k) => `${k ? "L" : "M"}${x(Date.parse(p.at)).toFixed(1)},${y(p.usedBytes / sr.quota).toFixed(1)}`)
        .join(" ");
      chart.append(
        svg("path", {
          d,
          fill: "none",
          stroke: i === 0 ? "#0b5cad" : "#8c959f",
          "stroke-width": 2,
          "stroke-dasharray": i === 0 ? "none" : "5 4",
          "data-project": sr.name,
        }),
      );
    }
    chart.append(...labels);
  }

  eventsPanel() {
    const select = el(
      "select",
      {
        id: "level-filter",
        onchange: (e) => {
          this.state.level = e.target.value;
          this.refreshNow();
        },
      },
      ...["", "info", "warn", "error"].map((l) =>
        el("option", { value: l, selected: this.state.level === l, text: l === "" ? "all levels" : l }),
      ),
    );
    return el(
      "section",
      { class: "card", "aria-labelledby": "e-h" },
      el(
        "div",
        { class: "card-head" },
        el("h2", { id: "e-h", text: "Latest events" }),
        el("span", { class: "grow" }),
        el("label", { for: "level-filter", class: "sr-only", text: "Filter events by level" }),
        select,
      ),
      this.state.events.length === 0
        ? el("p", { class: "muted", text: "No events." })
        : el(
            "ul",
            { class: "events" },
            this.state.events.map((e) => {
              const o = OUTCOMES[e.kind];
              return el(
                "li",
                { class: o ? `${e.level} outcome ${o.ok ? "ok" : "bad"}` : e.level, "data-kind": e.kind },
                el("span", { class: "lvl", text: e.level }),
                el("time", { class: "time muted", datetime: e.at, text: new Date(e.at).toLocaleTimeString() }),
                el("span", { class: "msg" }, o ? el("span", { class: "tag", text: o.tag }) : null, e.message),
              );
            }),
          ),
    );
  }

  settingsPanel(settings) {
    const errors = this.state.fieldErrors || {};
    const draft = this.state.settingsDraft || {};
    const typed = (name, value) => (name in draft ? draft[name] : value);
    const field = (id, label, input, errorKeys, wide = false) =>
      el(
        "div",
        { class: wide ? "field wide" : "field" },
        el("label", { for: id, text: label }),
        input,
        el("span", {
          class: "err",
          id: `${id}-err`,
          role: "alert",
          text: errorKeys
            .map((k) => errors[k])
            .filter(Boolean)
            .join("; "),
        }),
      );
    const num = (id, name, value, step) =>
      el("input", { id, name, type: "number", step, value: typed(name, value), "aria-describedby": `${id}-err` });
    const check = (id, name, label, on) =>
      el(
        "div",
        { class: "field check" },
        el("input", { id, name, type: "checkbox", checked: typed(name, on) }),
        el("label", { for: id, text: label }),
      );
    const form = el(
      "form",
      {
        class: "settings",
        novalidate: true,
        onsubmit: (e) => {
          e.preventDefault();
          this.saveSettings(e.target);
        },
      },
      field(
        "set-backup",
        "Backup threshold (%)",
        num("set-backup", "backupThreshold", +(settings.backupThreshold * 100).toFixed(2), "any"),
        ["backupThreshold"],
      ),
      field(
        "set-switch",
        "Switch threshold (%)",
        num("set-switch", "switchThreshold", +(settings.switchThreshold * 100).toFixed(2), "any"),
        ["switchThreshold"],
      ),
      field("set-qp", "Primary quota (MB)", num("set-qp", "quotaPrimary", +(settings.quotaBytes.primary / 1048576).toFixed(2), "any"), [
        "quotaBytes.primary",
        "quotaBytes",
      ]),
      field(
        "set-qs",
        "Secondary quota (MB)",
        num("set-qs", "quotaSecondary", +(settings.quotaBytes.secondary / 1048576).toFixed(2), "any"),
        ["quotaBytes.secondary", "quotaBytes"],
      ),
      field(
        "set-strategy",
        "Backup strategy",
        el(
          "select",
          { id: "set-strategy", name: "strategy" },
          el("option", { value: "auto", selected: typed("strategy", settings.strategy) === "auto", text: "auto (fdw on Edge, else copy)" }),
          el("option", { value: "copy", selected: typed("strategy", settings.strategy) === "copy", text: "copy (through Spillway)" }),
          el("option", { value: "fdw", selected: typed("strategy", settings.strategy) === "fdw", text: "fdw (standby pulls)" }),
        ),
        ["strategy"],
        true,
      ),
      check("set-auto-backup", "autoBackup", "Automatic backup", settings.autoBackup),
      check("set-auto-switch", "autoSwitch", "Automatic switch", settings.autoSwitch),
      check(
        "set-auth-sessions",
        "authSessions",
        "Keep users signed in across a switch (both projects share one JWT secret)",
        settings.authSessions,
      ),
      el(
        "div",
        { class: "actions" },
        el("button", { id: "save-settings", type: "submit", class: "primary", disabled: this.state.busy !== null, text: "Save settings" }),
        el("span", {
          class: `result ${this.state.settingsResult ? (this.state.settingsResult.ok ? "ok" : "error") : ""}`,
          id: "settings-result",
          role: "status",
          text: this.state.settingsResult ? this.state.settingsResult.text : "",
        }),
      ),
    );
    form.addEventListener("input", () => {
      this.settingsDirty = true;
    });
    this.settingsNode = el("section", { class: "card", "aria-labelledby": "s-h" }, el("h2", { id: "s-h", text: "Settings" }), form);
    return this.settingsNode;
  }

  // Says before sending what the server would answer: refused with the reason, and forcing
  // only once the operator types the target's name.
  switchDialog(status) {
    const to = status.standby;
    const a = status.afterSwitch;
    const refusal = status.health.reasons.find((r) => r.code === "switch_refused" || r.code === "standby_unreachable");
    // `force` overrides only the target's usage; the other refusals stand.
    const forcible = refusal && refusal.code === "switch_refused" && a && a.usage >= status.thresholds.switch;
    const forceButton = el("button", {
      value: "force",
      class: "danger",
      id: "confirm-switch-force",
      disabled: true,
      text: `Force the switch to ${to}`,
    });
    return el(
      "dialog",
      { id: "confirm-switch", "aria-labelledby": "cs-h" },
      el(
        "form",
        { method: "dialog" },
        el("h2", { id: "cs-h", text: `Switch the active project to ${to}?` }),
        el("p", {
          text: `Writes to ${status.active} are fenced for the final catch-up, then apps move to ${to} (epoch ${status.epoch + 1}).`,
        }),
        el("p", {
          id: "switch-after",
          text: a
            ? `After the switch ${to} will be at ${pct(a.usage)} of its quota (${bytes(a.usedBytes)} of ${bytes(status.projects[to].quotaBytes)}; switch threshold ${pct(status.thresholds.switch)}).`
            : `${to}'s usage after the switch is unknown: a project cannot be read.`,
        }),
        refusal
          ? el("p", {
              class: "refused",
              id: "switch-refused",
              text: `This switch would be refused: ${refusal.message.replace(/^a switch to \S+ would be refused: /, "")}`,
            })
          : null,
        forcible
          ? el(
              "div",
              { class: "force" },
              el("label", { for: "force-name", text: `To force it anyway, type ${to}:` }),
              el("input", {
                id: "force-name",
                autocomplete: "off",
                oninput: (e) => {
                  forceButton.disabled = e.target.value.trim() !== to;
                },
              }),
            )
          : null,
        el(
          "div",
          { class: "actions" },
          el("button", { value: "cancel", text: "Cancel" }),
          forcible ? forceButton : null,
          refusal ? null : el("button", { value: "confirm", class: "danger", id: "confirm-switch-yes", text: `Switch to ${to}` }),
        ),
      ),
    );
  }

  backupDialog(status) {
    const a = status.afterSwitch;
    return el(
      "dialog",
      { id: "confirm-backup", "aria-labelledby": "cb-h" },
      el(
        "form",
        { method: "dialog" },
        el("h2", { id: "cb-h", text: `Back up ${status.active} to ${status.standby} now?` }),
        el("p", {
          id: "backup-after",
          text: a
            ? `After it ${status.standby} will be at ${pct(a.usage)} of its quota (${bytes(a.usedBytes)} of ${bytes(status.projects[status.standby].quotaBytes)}).`
            : `${status.standby}'s usage after it is unknown: a project cannot be read.`,
        }),
        el(
          "div",
          { class: "actions" },
          el("button", { value: "cancel", text: "Cancel" }),
          el("button", { value: "confirm", class: "primary", id: "confirm-backup-yes", text: "Back up now" }),
        ),
      ),
    );
  }

  tokenPrompt() {
    const form = el(
      "form",
      {
        class: "token-form card",
        id: "token-prompt",
        onsubmit: (e) => {
          e.preventDefault();
          const token = new FormData(e.target).get("token");
          this.dispatchEvent(new CustomEvent("spillway-token", { detail: { token }, bubbles: true, composed: true }));
          this.token = String(token);
        },
      },
      el("h2", { text: "The admin token was refused" }),
      el("label", { for: "token-input", text: "Admin token (SPILLWAY_ADMIN_TOKEN)" }),
      el("input", { id: "token-input", name: "token", type: "password", autocomplete: "off", required: true }),
      el("div", { class: "actions" }, el("button", { type: "submit", class: "primary", text: "Use this token" })),
    );
    return form;
  }
}

if (!customElements.get("spillway-widget")) customElements.define("spillway-widget", SpillwayWidget);
