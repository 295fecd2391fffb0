// The "Managed sending" page and the read-only share page. Plain JS, no build step.
// Everything the server sends is inserted with textContent (never as HTML).
"use strict";

(function () {
  const mode = document.body.dataset.mode;
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 3000;
  // The most timeline entries kept per domain (the gateway answers at most 100 events a request).
  const TIMELINE_MAX = 100;

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("data-") || k.startsWith("aria-") || ["id", "type", "href", "role", "datetime", "title", "download", "tabindex", "for"].includes(k)) e.setAttribute(k, v === true ? "" : v);
      else e[k] = v;
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c.nodeType ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function announce(text) {
    const a = $("announce");
    if (!a) return;
    a.textContent = "";
    setTimeout(() => { a.textContent = text; }, 30);
  }

  function showError(text) {
    const e = $("error");
    if (!text) { e.hidden = true; e.textContent = ""; return; }
    e.textContent = text;
    e.hidden = false;
  }

  function localTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function relative(iso) {
    if (!iso) return "";
    const secs = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
    const abs = Math.abs(secs);
    let n, unit;
    if (abs < 60) { n = secs; unit = "second"; }
    else if (abs < 3600) { n = Math.round(secs / 60); unit = "minute"; }
    else if (abs < 86400) { n = Math.round(secs / 3600); unit = "hour"; }
    else { n = Math.round(secs / 86400); unit = "day"; }
    try { return new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }).format(n, unit); }
    catch (_) { return ""; }
  }

  function timeEl(iso) {
    return el("time", { datetime: iso, title: iso, text: localTime(iso) });
  }

  // ---- names ------------------------------------------------------------------

  // The name as its owner reads it (Unicode for an internationalised domain).
  function displayName(d) {
    return d.domain_unicode || d.domain;
  }

  // The domain's heading: the Unicode name, and beside it the ASCII form DNS uses
  // when the two differ (the owner may need to type it at a DNS host).
  function nameHeading(d, level, hid) {
    const h = el(`h${level}`, { class: "name", id: hid }, el("span", { class: "display", text: displayName(d) }));
    if (displayName(d) !== d.domain) {
      h.append(" ", el("span", { class: "ascii" }, "(in DNS: ", el("code", { text: d.domain }), ")"));
    }
    return h;
  }

  // Said on the card of an internationalised domain: why the records look different.
  function asciiNote(d) {
    if (displayName(d) === d.domain) return null;
    return el("p", { class: "help idn-note" }, "Your DNS host needs the name in its ASCII form, ",
      el("code", { text: d.domain }), `, which is how the records below spell ${displayName(d)}. Enter them exactly as shown.`);
  }

  // ---- copying ----------------------------------------------------------------

  async function copyText(text, button, what) {
    let ok = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        ok = true;
      }
    } catch (_) { ok = false; }
    if (!ok) {
      const ta = el("textarea", { "aria-hidden": "true" });
      ta.value = text;
      ta.style.position = "fixed"; ta.style.opacity = "0";
      document.body.append(ta);
      ta.select();
      try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
      ta.remove();
    }
    // What was copied, for people using assistive technology and for automated checks.
    button.dataset.copied = text;
    document.body.dataset.lastCopied = text;
    const label = button.textContent;
    button.textContent = ok ? "Copied" : "Select and copy";
    setTimeout(() => { button.textContent = label; }, 2000);
    announce(ok ? `Copied ${what}` : `Could not copy ${what}; select the text and copy it yourself`);
  }

  function copyButton(text, what, key) {
    const b = el("button", { type: "button", class: "copy", "data-copy": text, "data-key": key, "aria-label": `Copy ${what}`, text: "Copy" });
    b.addEventListener("click", () => copyText(text, b, what));
    return b;
  }

  // ---- records ----------------------------------------------------------------

  const PURPOSE = {
    spf: "SPF – allows us to send for your domain",
    dkim: "DKIM – signature key",
    return_path: "Return path – bounces",
    dmarc: "DMARC – policy (recommended)",
    tracking: "Tracking",
  };
  const TYPE_ORDER = ["MX", "TXT", "CNAME"];

  function recordCard(domain, r, i) {
    const key = `${domain.id}-${i}`;
    const rows = [
      el("dt", { text: "Type" }), el("dd", {}, el("span", { class: "mono", text: r.type })),
      el("dt", { text: "Host" }),
      el("dd", {}, el("code", { class: "host", text: r.host }), " ", copyButton(r.host, `host of the ${r.type} record at ${r.host}`, `host-${key}`),
        " ", el("span", { class: "full", text: `(full name: ${r.name})` })),
      el("dt", { text: "Value" }),
      el("dd", {}, el("code", { class: "value", text: r.value }), " ", copyButton(r.value, `value of the ${r.type} record at ${r.host}`, `value-${key}`)),
    ];
    if (r.priority !== null && r.priority !== undefined) rows.push(el("dt", { text: "Priority" }), el("dd", { text: String(r.priority) }));
    const diag = r.diagnosis ? el("p", { class: "diagnosis", "data-code": r.diagnosis.code, "data-host": r.diagnosis.host, text: r.diagnosis.message }) : null;
    const observed = (!r.diagnosis && r.dns_status === "mismatch" && r.observed && r.observed.length)
      ? el("p", { class: "help", text: `We found: ${r.observed.join(", ")}` }) : null;
    return el("li", { class: "record", "data-type": r.type, "data-name": r.name, "data-status": r.dns_status },
      el("div", { class: "row" },
        el("strong", { text: PURPOSE[r.purpose] || r.purpose }),
        el("span", { class: "help", text: r.required ? "required" : "optional" }),
        el("span", { class: "verdict", "data-status": r.dns_status, text: r.dns_status_label })),
      el("dl", {}, rows),
      diag, observed);
  }

  // `level`: the heading level of the groups, one below the domain's own heading.
  function recordGroups(domain, level) {
    const groups = new Map();
    for (const [i, r] of domain.records.entries()) {
      if (!groups.has(r.type)) groups.set(r.type, []);
      groups.get(r.type).push([i, r]);
    }
    const types = [...groups.keys()].sort((a, b) => {
      const ia = TYPE_ORDER.indexOf(a), ib = TYPE_ORDER.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    if (!types.length) return [el("p", { class: "help", text: "The records appear here in a few seconds." })];
    return types.map((t) => {
      const hid = `group-${domain.id}-${t}`;
      // Named by type and domain: with several domains, "TXT records" alone repeats.
      return el("section", { class: "group", "aria-labelledby": `${hid} domain-title-${domain.id}`, "data-type": t },
        el(`h${level}`, { id: hid, text: `${t} record${groups.get(t).length > 1 ? "s" : ""}` }),
        el("ul", { class: "records", role: "list" }, groups.get(t).map(([i, r]) => recordCard(domain, r, i))));
    });
  }

  function statusBlock(d) {
    const parts = [el("p", { class: "next-step", text: d.next_step })];
    if (d.next_check_at) {
      parts.push(el("p", { class: "next-check" }, "Next automatic check: ", timeEl(d.next_check_at), ` (${relative(d.next_check_at)})`));
    }
    if (d.last_checked_at) parts.push(el("p", { class: "help" }, "Last checked: ", timeEl(d.last_checked_at)));
    if (d.failure_reason) parts.push(el("p", { class: "diagnosis failure", text: d.failure_reason }));
    for (const note of d.notes || []) parts.push(el("p", { class: "diagnosis note", text: note }));
    return parts;
  }

  // ---- owner page ---------------------------------------------------------------

  let token = null;
  const state = { rendered: new Map(), timelines: new Map(), timelineLatest: new Map(), shares: new Map(), revoked: new Map(), openTimelines: new Set(), busy: new Set() };

  // The token comes in the fragment only (#token=...): a fragment never reaches a
  // server or a proxy's log. One in the query (?token=...) already did, so it is not
  // used; either is taken out of the address bar.
  function readToken() {
    const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
    const t = hash.get("token");
    if (t || new URLSearchParams(location.search).has("token")) {
      history.replaceState(null, "", location.pathname);
    }
    if (t) {
      sessionStorage.setItem("gateway-token", t);
      return t;
    }
    return sessionStorage.getItem("gateway-token");
  }

  async function api(method, path, body) {
    const res = await fetch(path, {
      method,
      headers: Object.assign({ Authorization: `Bearer ${token || ""}` }, body ? { "Content-Type": "application/json" } : {}),
      body: body ? JSON.stringify(body) : undefined,
    });
    let json = null;
    try { json = await res.json(); } catch (_) { json = null; }
    return { status: res.status, json };
  }

  function errorText(r) {
    return (r.json && r.json.error && r.json.error.message) || `Something went wrong (HTTP ${r.status}). Try again.`;
  }

  // The skip link leads to the domain list; without the list it would lead nowhere.
  function hideApp() {
    $("app").hidden = true;
    const skip = document.querySelector("a.skip");
    if (skip) skip.hidden = true;
  }

  function showPlan(message) {
    hideApp();
    $("plan-message").textContent = message;
    $("plan").hidden = false;
  }

  function showSignin(message) {
    hideApp();
    $("signin-message").textContent = message;
    $("signin").hidden = false;
  }

  function handleAuth(r) {
    if (r.status === 401) { showSignin(errorText(r)); return true; }
    if (r.status === 403 && r.json && r.json.error && r.json.error.code === "plan_not_available") { showPlan(r.json.error.message); return true; }
    return false;
  }

  async function action(domain, kind, button) {
    const paths = { "dns-configured": ["POST", `/api/v1/domains/${domain.id}/dns-configured`],
      refresh: ["POST", `/api/v1/domains/${domain.id}/refresh`],
      delete: ["DELETE", `/api/v1/domains/${domain.id}`] };
    if (kind === "delete" && !window.confirm(`Remove ${displayName(domain)}? Email will no longer be sent from it.`)) return;
    const [method, path] = paths[kind];
    state.busy.add(domain.id);
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    const r = await api(method, path);
    state.busy.delete(domain.id);
    button.disabled = false;
    button.removeAttribute("aria-busy");
    if (handleAuth(r)) return;
    if (r.status >= 400) { showError(errorText(r)); return; }
    showError(null);
    const name = displayName(domain);
    announce({ "dns-configured": `Checking ${name} now`, refresh: `Checking ${name} again`, delete: `${name} removed` }[kind]);
    await refreshAll();
  }

  async function share(domain, out) {
    const r = await api("POST", `/api/v1/domains/${domain.id}/share`, {});
    if (handleAuth(r)) return;
    if (r.status >= 400) { showError(errorText(r)); return; }
    state.shares.set(domain.id, r.json);
    state.revoked.delete(domain.id);
    renderShare(domain, out);
    const input = out.querySelector("input");
    if (input) input.focus();
    announce("Share link created");
  }

  async function revokeShares(domain, out, button) {
    if (!window.confirm(`Revoke every share link for ${displayName(domain)}? Anyone you sent one to can no longer open it. You can share a new link afterwards.`)) return;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    const r = await api("DELETE", `/api/v1/domains/${domain.id}/share`);
    button.disabled = false;
    button.removeAttribute("aria-busy");
    if (handleAuth(r)) return;
    if (r.status >= 400) { showError(errorText(r)); return; }
    showError(null);
    state.shares.delete(domain.id);
    state.revoked.set(domain.id, r.json.revoked_at);
    renderShare(domain, out);
    announce(`Share links for ${displayName(domain)} revoked`);
  }

  function renderShare(domain, out) {
    const s = state.shares.get(domain.id);
    out.replaceChildren();
    if (!s) {
      const at = state.revoked.get(domain.id);
      if (at) out.append(el("p", { class: "help revoked" }, "Share links made before ", timeEl(at), " no longer open."));
      return;
    }
    const id = `share-url-${domain.id}`;
    const input = el("input", { id, type: "text", readOnly: true, value: s.url, "data-key": `share-input-${domain.id}` });
    out.append(
      el("label", { for: id, text: "Read-only link for your DNS admin (no sign-in needed)" }),
      el("div", { class: "row" }, input, copyButton(s.url, "share link", `share-copy-${domain.id}`)),
      el("p", { class: "help" }, "Valid until ", timeEl(s.expires_at), ". Also as a file: ",
        el("a", { href: s.csv_url, download: true, class: "csv-link", text: "CSV" }), " · ",
        el("a", { href: s.zone_url, download: true, class: "zone-link", text: "zone file (BIND)" })));
  }

  async function downloadFile(domain, kind) {
    const res = await fetch(`/api/v1/domains/${domain.id}/records.${kind}`, { headers: { Authorization: `Bearer ${token}` } });
    if (!res.ok) { showError(`The download failed (HTTP ${res.status}).`); return; }
    const blob = await res.blob();
    const a = el("a", { href: URL.createObjectURL(blob), download: `${domain.domain}-dns-records.${kind}` });
    document.body.append(a); a.click(); a.remove();
  }

  function timelineBlock(d) {
    const entries = state.timelines.get(d.id) || [];
    const details = el("details", { class: "timeline", "data-key": `timeline-${d.id}` },
      el("summary", { text: entries.length >= TIMELINE_MAX ? `Timeline of checks (latest ${entries.length})` : `Timeline of checks (${entries.length})` }),
      entries.length ? el("ol", { reversed: true }, entries.map((e) =>
        el("li", { "data-kind": e.kind }, timeEl(e.at), " – ", el("strong", { text: e.title }), e.detail ? ` – ${e.detail}` : ""))) :
        el("p", { class: "help", text: "No checks yet." }));
    details.open = state.openTimelines.has(d.id);
    details.addEventListener("toggle", () => { details.open ? state.openTimelines.add(d.id) : state.openTimelines.delete(d.id); });
    return details;
  }

  function domainArticle(d, sender) {
    const live = d.badge !== "removed";
    const hid = `domain-title-${d.id}`;
    const isDefault = sender && sender.domain === d.domain && d.badge === "verified";
    const art = el("article", { class: "domain", id: `domain-${d.id}`, "data-domain": d.domain, "data-display-name": displayName(d), "data-status": d.status, "aria-labelledby": hid },
      el("header", {},
        nameHeading(d, 3, hid),
        el("span", { class: "badge", "data-badge": d.badge, role: "status", text: d.badge_label }),
        isDefault ? el("span", { class: "help", text: "Default sender" }) : null),
      statusBlock(d));
    if (live) {
      const out = el("div", { class: "share-out" });
      const mk = (text, kind, cls) => {
        const b = el("button", { type: "button", class: cls || "", "data-action": kind, "data-key": `${kind}-${d.id}`, "aria-describedby": hid, text });
        b.addEventListener("click", () => action(d, kind, b));
        return b;
      };
      const shareBtn = el("button", { type: "button", "data-action": "share", "data-key": `share-${d.id}`, "aria-describedby": hid, text: "Share with your DNS admin" });
      shareBtn.addEventListener("click", () => share(d, out));
      const revokeBtn = el("button", { type: "button", "data-action": "revoke-shares", "data-key": `revoke-shares-${d.id}`, "aria-describedby": hid, text: "Revoke links" });
      revokeBtn.addEventListener("click", () => revokeShares(d, out, revokeBtn));
      const csvBtn = el("button", { type: "button", "data-action": "csv", "data-key": `csv-${d.id}`, "aria-describedby": hid, text: "Download CSV" });
      csvBtn.addEventListener("click", () => downloadFile(d, "csv"));
      const zoneBtn = el("button", { type: "button", "data-action": "zone", "data-key": `zone-${d.id}`, "aria-describedby": hid, text: "Download zone file" });
      zoneBtn.addEventListener("click", () => downloadFile(d, "zone"));
      art.append(el("div", { class: "actions" },
        mk("I've added the records", "dns-configured", "primary"), mk("Check again", "refresh"), shareBtn, revokeBtn, csvBtn, zoneBtn,
        mk("Remove domain", "delete", "danger")), out);
      renderShare(d, out);
      const note = asciiNote(d);
      if (note) art.append(note);
      art.append(...recordGroups(d, 4));
    }
    art.append(timelineBlock(d));
    return art;
  }

  function render(data) {
    const list = $("domain-list");
    const sender = data.sender;
    $("sender").textContent = sender && sender.managed
      ? `Email is sent from ${sender.from}.`
      : `Email is sent from ${sender ? sender.from : "the platform's address"} until one of your domains is verified.`;
    // Live domains first, removed ones after.
    const domains = [...data.domains].sort((a, b) => (a.badge === "removed") - (b.badge === "removed"));
    $("empty").hidden = domains.length > 0;
    const focusedKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
    const seen = new Set();
    let prev = null;
    for (const d of domains) {
      seen.add(d.id);
      const fingerprint = JSON.stringify([d, state.timelines.get(d.id) || [], sender && sender.domain]);
      let node = $(`domain-${d.id}`);
      if (!node || state.rendered.get(d.id) !== fingerprint) {
        const fresh = domainArticle(d, sender);
        if (node) node.replaceWith(fresh); else list.append(fresh);
        node = fresh;
        state.rendered.set(d.id, fingerprint);
      }
      if (prev ? prev.nextSibling !== node : list.firstChild !== node) {
        if (prev) prev.after(node); else list.prepend(node);
      }
      prev = node;
    }
    for (const child of [...list.children]) {
      if (!seen.has(child.id.replace(/^domain-/, ""))) child.remove();
    }
    if (focusedKey && (!document.activeElement || document.activeElement === document.body)) {
      const again = list.querySelector(`[data-key="${CSS.escape(focusedKey)}"]`);
      if (again) again.focus();
    }
  }

  let refreshing = false;
  async function refreshAll() {
    if (refreshing) return;
    refreshing = true;
    try {
      const r = await api("GET", "/api/v1/domains");
      if (handleAuth(r)) return;
      if (r.status !== 200) { showError(errorText(r)); return; }
      await Promise.all(r.json.domains.map(async (d) => {
        // The first time the newest page; then only what happened since (`after`).
        const since = state.timelineLatest.get(d.id);
        const t = await api("GET", `/api/v1/domains/${d.id}/timeline` + (since === undefined ? "" : `?after=${since}`));
        if (t.status !== 200) return;
        const known = state.timelines.get(d.id) || [];
        // A whole page of new events (`older` set) replaces what was shown.
        const merged = since === undefined || t.json.older != null ? t.json.entries : t.json.entries.concat(known);
        state.timelines.set(d.id, merged.slice(0, TIMELINE_MAX));
        state.timelineLatest.set(d.id, t.json.latest);
      }));
      render(r.json);
      document.body.dataset.loaded = "true";
    } catch (e) {
      showError("We could not reach the server; retrying.");
    } finally {
      refreshing = false;
    }
  }

  async function owner() {
    token = readToken();
    if (!token) { showSignin("Open this page from the platform's email settings."); return; }
    const s = await api("GET", "/api/v1/session");
    if (handleAuth(s)) return;
    if (s.status !== 200) { showError(errorText(s)); return; }
    $("app").hidden = false;
    $("add-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const input = $("domain-input");
      const err = $("add-error");
      const domain = input.value.trim();
      if (!domain) {
        err.textContent = "Enter a domain name, for example acme.com.";
        err.hidden = false; input.setAttribute("aria-invalid", "true"); input.focus();
        return;
      }
      const btn = $("add-button");
      btn.disabled = true; btn.textContent = "Adding…";
      const r = await api("POST", "/api/v1/domains", { domain });
      btn.disabled = false; btn.textContent = "Add domain";
      if (handleAuth(r)) return;
      if (r.status >= 400) {
        err.textContent = errorText(r); err.hidden = false; input.setAttribute("aria-invalid", "true"); input.focus();
        return;
      }
      err.hidden = true; input.removeAttribute("aria-invalid"); input.value = "";
      announce(`${displayName(r.json.domain)} added. Add the DNS records shown below.`);
      await refreshAll();
    });
    await refreshAll();
    setInterval(refreshAll, POLL_MS);
  }

  // ---- share page -----------------------------------------------------------------

  async function shared() {
    const id = location.pathname.split("/").filter(Boolean)[1];
    const qs = location.search;
    let last = null;
    const load = async () => {
      let res, json = null;
      try {
        res = await fetch(`/api/v1/share/${encodeURIComponent(id)}${qs}`);
        json = await res.json();
      } catch (_) { showError("We could not reach the server; retrying."); return; }
      if (res.status !== 200) {
        showError((json && json.error && json.error.message) || "This link is not valid.");
        $("domain-list").replaceChildren();
        document.body.dataset.refused = "true";
        return;
      }
      showError(null);
      $("share-expiry").replaceChildren("This link is valid until ", timeEl(json.expires_at), ". Download the records as ",
        el("a", { href: json.csv_url, download: true, class: "csv-link", text: "CSV" }), " or as a ",
        el("a", { href: json.zone_url, download: true, class: "zone-link", text: "zone file (BIND)" }), ".");
      const fp = JSON.stringify(json.domain);
      if (fp !== last) {
        last = fp;
        const d = json.domain;
        const hid = `domain-title-${d.id}`;
        $("domain-list").replaceChildren(el("article", { class: "domain", id: `domain-${d.id}`, "data-domain": d.domain, "data-display-name": displayName(d), "data-status": d.status, "aria-labelledby": hid },
          el("header", {}, nameHeading(d, 2, hid),
            el("span", { class: "badge", "data-badge": d.badge, role: "status", text: d.badge_label })),
          statusBlock(d), asciiNote(d), ...recordGroups(d, 3)));
      }
      document.body.dataset.loaded = "true";
    };
    await load();
    setInterval(load, 5000);
  }

  if (mode === "share") shared(); else owner();
})();
