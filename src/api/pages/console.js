/* The operator's console: /console. Asks for the admin token once per
 * browser session (sessionStorage), then lists every tenant with its Lever
 * connection, webhook, backlog, failed jobs and the replica holding its
 * lease, and the replicas (GET /v1/cluster); failed jobs can be retried
 * and connect links made from here. */
"use strict";

(function () {
  var el = LB.el, $ = LB.$;
  var KEY = "leverbridge.admin_token";
  var POLL_MS = 10000;
  var MAX_PAGES = 10;
  var st = {token: null, key: "", timer: null, open: null};

  function store() {
    try { return window.sessionStorage; } catch (e) { return null; }
  }

  function call(method, path, body) {
    return LB.api(st.token, method, path, body).then(function (res) {
      if (res.status === 401) signOut("The admin token was refused. Sign in again.");
      return res;
    });
  }

  function signIn(ev) {
    ev.preventDefault();
    var v = $("admin-token").value.trim();
    var out = LB.clear($("signin-result"));
    if (!v) {
      out.appendChild(el("p", {class: "alert error", text: "Enter the admin token."}));
      $("admin-token").focus();
      return;
    }
    st.token = v;
    LB.api(v, "GET", "/v1/tenants?limit=1").then(function (res) {
      if (res.status === 200) {
        var s = store();
        if (s) s.setItem(KEY, v);
        $("admin-token").value = "";
        showDash();
      } else {
        st.token = null;
        out.appendChild(el("p", {class: "alert error", text: res.status === 401
          ? "This is not the admin token." : LB.message(res)}));
        $("admin-token").focus();
      }
    });
  }

  function signOut(why) {
    var s = store();
    if (s) s.removeItem(KEY);
    st.token = null;
    st.key = "";
    if (st.timer) clearInterval(st.timer);
    st.timer = null;
    $("dash").hidden = true;
    $("signin").hidden = false;
    var out = LB.clear($("signin-result"));
    if (why) out.appendChild(el("p", {class: "alert error", text: why}));
    $("admin-token").focus();
  }

  function showDash() {
    $("signin").hidden = true;
    $("dash").hidden = false;
    load();
    if (!st.timer) st.timer = setInterval(function () { if (!document.hidden) load(); }, POLL_MS);
    $("tenants-h").setAttribute("tabindex", "-1");
    $("tenants-h").focus();
  }

  /* Every tenant, following the cursor (at most MAX_PAGES pages of 200). */
  function fetchAll() {
    var all = [], pages = 0;
    function page(cursor) {
      var q = "/v1/tenants?limit=200" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
      return call("GET", q).then(function (res) {
        if (res.status !== 200) return {res: res};
        all = all.concat(res.body.data || []);
        pages++;
        if (res.body.next_cursor && pages < MAX_PAGES) return page(res.body.next_cursor);
        return {data: all, more: !!res.body.next_cursor};
      });
    }
    return page(null);
  }

  /* The replicas seen alive, as the one answering saw them last. */
  function drawNodes() {
    return call("GET", "/v1/cluster").then(function (res) {
      var box = LB.clear($("nodes")), sum = $("nodes-sum");
      if (res.status !== 200) {
        sum.textContent = "";
        if (res.status !== 401) box.appendChild(el("p", {class: "alert error", text: LB.message(res)}));
        return;
      }
      var c = res.body, nodes = c.nodes || [];
      sum.textContent = c.backend === "postgres"
        ? nodes.length + (nodes.length === 1 ? " replica" : " replicas") + " on PostgreSQL; this page is served by " + c.node + "."
        : "One server (SQLite): it holds every tenant.";
      box.appendChild(LB.table("Replicas", ["Replica", "Address", "Last seen", "Leases"],
        nodes.map(function (n) {
          var id = el("span", null, el("code", {text: n.id}));
          if (n.id === c.node) id.appendChild(el("span", {class: "muted small", text: " (this one)"}));
          return [id, n.advertise_url || "", LB.timeEl(n.last_seen_at), String(n.leases)];
        })));
    });
  }

  function load() {
    drawTrend($("trend"), "/v1/stats");
    drawNodes();
    return fetchAll().then(function (r) {
      var err = LB.clear($("dash-error"));
      if (!r.data) {
        if (r.res.status !== 401) err.appendChild(el("p", {class: "alert error", text: LB.message(r.res)}));
        return;
      }
      var key = JSON.stringify(r.data);
      if (key === st.key) return;
      st.key = key;
      render(r.data, r.more);
    });
  }

  function render(list, more) {
    var connected = 0, active = 0, failed = 0, queued = 0;
    list.forEach(function (t) {
      var c = t.lever || {};
      if (c.status === "connected") connected++;
      if (c.webhook && c.webhook.status === "active") active++;
      if (c.backlog) { failed += c.backlog.failed || 0; queued += (c.backlog.queued || 0) + (c.backlog.retrying || 0); }
    });
    $("totals").textContent = list.length + (more ? "+" : "") + " tenants \u00b7 " + connected +
      " connected \u00b7 " + active + " webhooks active \u00b7 " + queued + " jobs waiting \u00b7 " +
      failed + " failed jobs";
    var box = LB.clear($("tenants"));
    if (!list.length) {
      box.appendChild(el("p", {class: "muted", text: "No tenants yet. Create one with PUT /v1/tenants/{id}."}));
      return;
    }
    box.appendChild(LB.table("Tenants", ["Tenant", "Add-on", "Lever", "Webhook", "Backlog", "Failed", "Replica", ""],
      list.map(function (t) {
        var c = t.lever || {}, w = c.webhook || {status: "none"}, b = c.backlog || {};
        var lever = el("span", null, LB.connBadge(c.status));
        if (c.status === "connected") lever.appendChild(el("span", {class: "muted small",
          text: " " + (c.auth === "oauth" ? "OAuth" : "API key")}));
        if (c.permissions && c.permissions.missing && c.permissions.missing.length) {
          lever.appendChild(el("span", {class: "small bad-text", text: " missing: " + c.permissions.missing.join(", ")}));
        }
        var hook = el("span", null, LB.hookBadge(w.status));
        if (w.status === "active") {
          hook.appendChild(el("span", {class: "muted small", text: w.last_delivery_at
            ? " last delivery " + LB.time(w.last_delivery_at) : " no delivery yet"}));
        } else if (w.last_error) {
          hook.appendChild(el("span", {class: "small bad-text", text: " " + w.last_error}));
        }
        if (w.missed > 0) {
          hook.appendChild(el("span", {class: "small bad-text missed", text: " Lever is not delivering: " +
            w.missed + " missed in 7 days (\u201cCandidate state change\u201d toggle off?)"}));
        }
        var name = el("span", null, el("strong", {text: t.name}), el("br"),
          el("code", {class: "small", text: t.id}));
        var nfailed = b.failed || 0;
        var actions = el("div", {class: "row"},
          el("button", {text: "Failed jobs", class: "secondary", attrs: {type: "button",
            "aria-label": "Failed jobs of " + t.name, disabled: nfailed === 0},
            on: {click: function () { showFailed(t); }}}),
          el("button", {text: "Last 24 hours", class: "secondary", attrs: {type: "button",
            "aria-label": "Last 24 hours of " + t.name},
            on: {click: function () { showTrend(t); }}}),
          el("button", {text: "Connect link", class: "secondary", attrs: {type: "button",
            "aria-label": "Make a connect link for " + t.name},
            on: {click: function () { makeLink(t); }}}));
        var holder = t.lease ? el("code", {class: "small holder", text: t.lease.node})
                             : el("span", {class: "muted small holder", text: "none yet"});
        return [name, t.api_addon ? "yes" : "no", lever, hook,
                (b.queued || 0) + " queued, " + (b.retrying || 0) + " retrying",
                nfailed ? LB.badge(String(nfailed), "bad") : "0", holder, actions];
      })));
  }

  /* ---- charts: the hourly counts of /v1/stats, drawn as inline SVG ---- */

  var SVG = "http://www.w3.org/2000/svg";
  var CHARTS = [
    {title: "Lever deliveries", group: "deliveries", kinds: ["accepted", "duplicate", "refused"]},
    {title: "Jobs", group: "jobs", kinds: ["succeeded", "failed"]}
  ];

  function svg(tag, attrs, text) {
    var n = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { n.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) n.textContent = text;
    return n;
  }

  /* One chart: a stacked bar per hour, oldest left; each bar has a <title>
   * with its numbers, and the figure a caption with the day's totals. */
  function chart(stats, spec) {
    var W = 720, H = 140, PAD = 24, n = stats.buckets.length, bw = (W - PAD) / n;
    var max = 1, sums = {};
    spec.kinds.forEach(function (k) { sums[k] = 0; });
    stats.buckets.forEach(function (b) {
      var tot = 0;
      spec.kinds.forEach(function (k) { tot += b[spec.group][k]; sums[k] += b[spec.group][k]; });
      if (tot > max) max = tot;
    });
    var root = svg("svg", {viewBox: "0 0 " + W + " " + (H + 18), class: "chart", role: "img",
                           "aria-label": spec.title + ", per hour", "data-group": spec.group});
    root.appendChild(svg("text", {x: 0, y: 10, class: "axis"}, String(max)));
    root.appendChild(svg("line", {x1: PAD, y1: H, x2: W, y2: H, class: "base"}));
    stats.buckets.forEach(function (b, i) {
      var x = PAD + i * bw, y = H, g = svg("g", {class: "bar"});
      var hour = new Date(b.start);
      var label = hour.toLocaleString([], {weekday: "short", hour: "2-digit", minute: "2-digit"});
      var parts = spec.kinds.map(function (k) { return b[spec.group][k] + " " + k; });
      g.appendChild(svg("title", null, label + ": " + parts.join(", ")));
      spec.kinds.forEach(function (k) {
        var v = b[spec.group][k];
        if (!v) return;
        var h = Math.max(1, (H - 14) * v / max);
        y -= h;
        g.appendChild(svg("rect", {x: x + 1, y: y, width: Math.max(1, bw - 2), height: h,
                                   class: "seg-" + k, "data-kind": k, "data-value": v}));
      });
      if (i % 6 === 0)
        g.appendChild(svg("text", {x: x, y: H + 14, class: "axis"},
                          hour.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"})));
      root.appendChild(g);
    });
    var caption = el("figcaption", {class: "small"}, el("strong", {text: spec.title + ": "}));
    spec.kinds.forEach(function (k, i) {
      caption.appendChild(el("span", {class: "key seg-" + k + "-key", text: (i ? " \u00b7 " : "") +
        sums[k] + " " + k, attrs: {"data-kind": k, "data-total": sums[k]}}));
    });
    return el("figure", {class: "chart-fig"}, root, caption);
  }

  function drawTrend(box, path) {
    return call("GET", path).then(function (res) {
      LB.clear(box);
      if (res.status !== 200) {
        if (res.status !== 401) box.appendChild(el("p", {class: "alert error", text: LB.message(res)}));
        return;
      }
      CHARTS.forEach(function (c) { box.appendChild(chart(res.body, c)); });
    });
  }

  function showTrend(t) {
    var body = openDetail("Last 24 hours of " + t.name);
    body.appendChild(el("p", {class: "muted", text: "Loading\u2026"}));
    drawTrend(body, "/v1/tenants/" + encodeURIComponent(t.id) + "/stats");
  }

  function openDetail(title) {
    var d = $("detail");
    $("detail-h").textContent = title;
    d.hidden = false;
    var body = LB.clear($("detail-body"));
    d.focus();
    return body;
  }

  function showFailed(t) {
    var body = openDetail("Failed jobs of " + t.name);
    body.appendChild(el("p", {class: "muted", text: "Loading\u2026"}));
    var base = "/v1/tenants/" + encodeURIComponent(t.id);
    call("GET", base + "/jobs?status=failed&limit=50").then(function (res) {
      LB.clear(body);
      if (res.status !== 200) {
        if (res.status !== 401) body.appendChild(el("p", {class: "alert error", text: LB.message(res)}));
        return;
      }
      var list = res.body.data || [];
      if (!list.length) {
        body.appendChild(el("p", {class: "muted", text: "No failed jobs."}));
        return;
      }
      var status = el("p", {attrs: {role: "status"}});
      body.appendChild(LB.table("Failed jobs", ["Updated", "Job", "Action", "Candidate", "Error", "Tries", ""],
        list.map(function (j) {
          return [LB.timeEl(j.updated_at), el("code", {class: "small", text: j.id}), LB.actionText(j.action),
                  j.opportunity_id || "", j.last_error || "", String(j.attempts || 0),
                  el("button", {text: "Retry", class: "secondary", attrs: {type: "button",
                    "aria-label": "Retry " + j.id}, on: {click: function (ev) {
                      var btn = ev.target;
                      btn.disabled = true;
                      call("POST", base + "/jobs/" + encodeURIComponent(j.id) + "/retry").then(function (r) {
                        status.textContent = r.status === 202 ? j.id + " was queued again." : LB.message(r);
                        if (r.status !== 202) btn.disabled = false;
                        load();
                      });
                    }}})];
        })));
      body.appendChild(status);
    });
  }

  function makeLink(t) {
    var body = openDetail("Connect link for " + t.name);
    var id = "link-expiry";
    var sel = el("select", {attrs: {id: id}});
    [["15m", "15 minutes"], ["1h", "1 hour"], ["24h", "24 hours"]].forEach(function (o) {
      sel.appendChild(el("option", {text: o[1], attrs: {value: o[0]}}));
    });
    sel.value = "1h";
    var out = el("div", {attrs: {role: "status"}});
    var form = el("form", {attrs: {novalidate: true}, on: {submit: function (ev) {
      ev.preventDefault();
      call("POST", "/v1/tenants/" + encodeURIComponent(t.id) + "/connect-links", {expires_in: sel.value})
        .then(function (res) {
          LB.clear(out);
          if (res.status !== 201) {
            if (res.status !== 401) out.appendChild(el("p", {class: "alert error", text: LB.message(res)}));
            return;
          }
          var url = el("input", {attrs: {type: "text", readonly: true, id: "link-url", value: res.body.url}});
          out.appendChild(el("label", {text: "Link (valid until " + LB.time(res.body.expires_at) + ")",
            attrs: {for: "link-url"}}));
          out.appendChild(url);
          out.appendChild(el("p", {class: "muted small", text: "Anyone with this link can manage this " +
            "tenant's Lever connection until it expires. Send it only to the customer."}));
          url.focus();
          url.select();
        });
    }}}, el("label", {text: "Valid for", attrs: {for: id}}), sel,
      el("button", {text: "Make the link", attrs: {type: "submit"}}));
    body.appendChild(form);
    body.appendChild(out);
  }

  function start() {
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", function () { signOut(null); });
    $("refresh").addEventListener("click", function () { st.key = ""; load(); });
    var s = store();
    st.token = s ? s.getItem(KEY) : null;
    if (st.token) showDash();
    else {
      $("signin").hidden = false;
      $("admin-token").focus();
    }
  }

  start();
})();
