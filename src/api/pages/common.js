/* Shared helpers of the connect page and the console. Plain JavaScript, no
 * framework; every piece of text from the server goes into the page through
 * textContent, never as HTML. */
"use strict";

var LB = (function () {
  /* el("p", {class: "x", text: "hi", attrs: {id: "a"}, on: {click: fn}}, child, ...) */
  function el(tag, props) {
    var node = document.createElement(tag);
    var p = props || {};
    if (p.class) node.className = p.class;
    if (p.text !== undefined && p.text !== null) node.textContent = String(p.text);
    if (p.attrs) {
      Object.keys(p.attrs).forEach(function (k) {
        var v = p.attrs[k];
        if (v === true) node.setAttribute(k, "");
        else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, String(v));
      });
    }
    if (p.on) {
      Object.keys(p.on).forEach(function (k) { node.addEventListener(k, p.on[k]); });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function $(id) { return document.getElementById(id); }

  function show(node, on) {
    if (typeof node === "string") node = $(node);
    node.hidden = !on;
  }

  /* One API call. Resolves to {status, body}; status 0 when the server could
   * not be reached. */
  function api(token, method, path, body) {
    var opts = {method: method, headers: {"Accept": "application/json"},
                credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer"};
    if (token) opts.headers["Authorization"] = "Bearer " + token;
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (res) {
      return res.text().then(function (text) {
        var parsed = null;
        try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = null; }
        return {status: res.status, body: parsed};
      });
    }, function () {
      return {status: 0, body: null};
    });
  }

  function errorOf(res) {
    return (res.body && res.body.error) || {};
  }

  /* A sentence for a failed call. */
  function message(res) {
    if (res.status === 0) return "The server could not be reached. Check your connection and try again.";
    var e = errorOf(res);
    return e.message || ("The server answered " + res.status + ".");
  }

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  /* "27 Nov 2026, 03:36" in the browser's time zone; "" for null. */
  function time(iso) {
    if (!iso) return "";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    var months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    return d.getDate() + " " + months[d.getMonth()] + " " + d.getFullYear() + ", " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  /* <time datetime=iso>27 Nov 2026, 03:36</time> */
  function timeEl(iso) {
    return el("time", {text: time(iso), attrs: {datetime: iso || null}});
  }

  function badge(text, kind) {
    return el("span", {class: "badge " + (kind || "muted"), text: text});
  }

  var HOOK_TEXT = {none: "Not set up", pending: "Setting up", active: "Active", failed: "Failed"};
  var HOOK_KIND = {none: "muted", pending: "warn", active: "ok", failed: "bad"};
  var CONN_TEXT = {disconnected: "Not connected", connected: "Connected", needs_reauth: "Needs reconnecting"};
  var CONN_KIND = {disconnected: "muted", connected: "ok", needs_reauth: "bad"};

  function connBadge(status) {
    return badge(CONN_TEXT[status] || status, CONN_KIND[status]);
  }

  function hookBadge(status) {
    return badge(HOOK_TEXT[status] || status, HOOK_KIND[status]);
  }

  /* A table in a scrolling wrapper: heads are strings, rows arrays of nodes
   * or strings. */
  function table(caption, heads, rows) {
    var thead = el("thead", null, el.apply(null, ["tr", null].concat(heads.map(function (h) {
      return el("th", {text: h, attrs: {scope: "col"}});
    }))));
    var tbody = el("tbody");
    rows.forEach(function (r) {
      var tr = el("tr");
      r.forEach(function (cell, i) {
        var td = el("td", {attrs: {"data-label": heads[i]}});
        if (cell === null || cell === undefined) cell = "";
        td.appendChild(typeof cell === "string" || typeof cell === "number"
          ? document.createTextNode(String(cell)) : cell);
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    return el("div", {class: "scroll"},
      el("table", null, caption ? el("caption", {class: "visually-hidden", text: caption}) : null,
        thead, tbody));
  }

  /* A short description of a job's action. */
  function actionText(a) {
    if (!a || !a.type) return "";
    switch (a.type) {
      case "send_assessment": return "Send assessment " + (a.assessment || "");
      case "add_note": return "Add a note";
      case "add_tags": return "Add tags: " + (a.tags || []).join(", ");
      case "move_stage": return "Move to stage " + (a.stage_name || a.stage || "");
      default: return a.type;
    }
  }

  return {el: el, clear: clear, $: $, show: show, api: api, errorOf: errorOf,
          message: message, time: time, timeEl: timeEl, badge: badge, connBadge: connBadge,
          hookBadge: hookBadge, table: table, actionText: actionText};
})();
