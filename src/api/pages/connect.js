/* The hosted connect page: /connect/<token>. The token in the URL is a grant
 * for one tenant; it is sent as the bearer token of that tenant's /v1 routes.
 * Connect Lever (OAuth or API key), watch the connection and its webhook,
 * manage workflows, see recent events and retry failed jobs. */
"use strict";

(function () {
  var el = LB.el, $ = LB.$;
  var POLL_MS = 2500;

  var token = decodeURIComponent(location.pathname.replace(/^\/connect\//, ""));
  var tenant = token.split(".").slice(0, -2).join(".");
  var base = "/v1/tenants/" + encodeURIComponent(tenant);

  var st = {
    conn: null, connKey: "", stages: [], postings: [], catalogLoaded: false, catalogAt: 0,
    workflows: [], editing: null, expired: false, eventsKey: "", jobsKey: "",
    showConnect: false, timer: null, actionSeq: 0,
    backfills: {}, bfTimer: null /* workflow id -> its last backfill, while the page is open */
  };

  function call(method, path, body) {
    return LB.api(token, method, base + path, body).then(function (res) {
      if (res.status === 401) linkExpired();
      return res;
    });
  }

  function linkExpired() {
    if (st.expired) return;
    st.expired = true;
    var b = $("banner");
    LB.clear(b).appendChild(el("p", null, el("strong", {text: "This link has expired. "}),
      "Go back to the application and open the Lever connection again to get a new link."));
    b.hidden = false;
    Array.prototype.forEach.call(document.querySelectorAll("button, input, select"),
      function (n) { n.disabled = true; });
    if (st.timer) clearInterval(st.timer);
  }

  function alertBox(kind, title, lines, list) {
    var box = el("div", {class: "alert " + kind});
    if (title) box.appendChild(el("p", null, el("strong", {text: title})));
    (lines || []).forEach(function (l) { if (l) box.appendChild(el("p", {text: l})); });
    if (list && list.length) {
      var ul = el("ul", {class: "missing"});
      list.forEach(function (m) { ul.appendChild(el("li", null, el("code", {text: m}))); });
      box.appendChild(ul);
    }
    return box;
  }

  /* ---- connection and hook ------------------------------------------------ */

  function renderConn(c) {
    var sum = LB.clear($("conn-summary"));
    var how = c.auth === "oauth" ? "with Lever sign-in" : c.auth === "api_key" ? "with an API key" : "";
    var line = el("p", {class: "status-line"}, el("span", {text: "Status: "}), LB.connBadge(c.status));
    if (c.status === "connected" && how) {
      line.appendChild(document.createTextNode(" " + how + " since "));
      line.appendChild(LB.timeEl(c.connected_at));
    }
    sum.appendChild(line);
    if (c.status === "needs_reauth") {
      sum.appendChild(alertBox("error", "Lever no longer accepts the saved credentials.",
        ["Connect again below. Nothing is lost: waiting jobs continue once Lever is connected."]));
    }
    var missing = (c.permissions && c.permissions.missing) || [];
    if (c.status !== "disconnected" && missing.length) {
      sum.appendChild(alertBox("error", "Lever refused an action: the key lacks " +
        (missing.length === 1 ? "this permission" : "these permissions") + ".",
        ["Ask a Lever Super Admin to add " + (missing.length === 1 ? "it" : "them") +
         " under Settings > Integrations and API > API Credentials, then retry the failed jobs."],
        missing));
    }
    if (c.status === "connected") {
      sum.appendChild(el("p", null, el("button", {text: st.showConnect ? "Hide" : "Use other credentials",
        class: "link", attrs: {type: "button", "aria-expanded": st.showConnect ? "true" : "false",
          "aria-controls": "connect"},
        on: {click: function () { st.showConnect = !st.showConnect; renderConn(st.conn); }}})));
    }

    var hs = LB.clear($("hook-summary"));
    var w = c.webhook || {status: "none"};
    if (w.warning) {
      hs.appendChild(alertBox("warn", "Lever cannot reach this server: webhooks will not arrive.",
        [w.warning, "Tell the operator of this integration server; nothing in Lever can fix it."]));
    }
    if (c.status !== "disconnected") {
      hs.appendChild(el("p", {class: "status-line", attrs: {id: "hook-line"}},
        el("span", {text: "Webhook: "}), LB.hookBadge(w.status)));
      if (w.status === "pending") {
        hs.appendChild(el("p", {text: "Creating the webhook in Lever" +
          (w.attempts > 0 ? " (attempt " + (w.attempts + 1) + ")" : "") + "\u2026"}));
        if (w.last_error) hs.appendChild(el("p", {class: "muted", text: "Last try: " + w.last_error}));
      } else if (w.status === "active") {
        var p = el("p", null, "Active since ", LB.timeEl(w.active_since), ". ");
        if (w.last_delivery_at) p.appendChild(el("span", null, "Last event from Lever: ", LB.timeEl(w.last_delivery_at), "."));
        else p.appendChild(document.createTextNode("No event from Lever yet."));
        hs.appendChild(p);
      } else if (w.status === "failed") {
        hs.appendChild(alertBox("error", "Lever did not accept the webhook.",
          [w.last_error || "", "Check the key's webhook permissions, then set it up again."]));
      }
      if (w.missed > 0) {
        var box = alertBox("warn", "Lever is not delivering stage changes.",
          [w.missed + (w.missed === 1 ? " stage change" : " stage changes") +
           " of the last 7 days reached us only by polling Lever, minutes late.",
           "In Lever, open Settings > Integrations and API > Webhooks and switch on " +
           "\u201cCandidate state change\u201d."]);
        box.id = "missed-warning";
        hs.appendChild(box);
      }
    }
    var hint = c.status === "connected" && (w.status === "pending" || w.status === "active") &&
      !w.last_delivery_at;
    $("hook-hint").hidden = !hint;
    $("reprovision").hidden = !(c.status === "connected" && w.status === "failed");
    $("disconnect").hidden = c.status === "disconnected";

    $("connect").hidden = c.status === "connected" && !st.showConnect;
    $("connect-h").textContent = c.status === "connected" ? "Use other Lever credentials"
      : c.status === "needs_reauth" ? "Connect Lever again" : "Connect your Lever account";
    $("workflows").hidden = c.status === "disconnected";
    $("activity").hidden = c.status === "disconnected";
  }

  function applyConn(c) {
    var key = JSON.stringify(c);
    var wasConnected = st.conn && st.conn.status === "connected";
    st.conn = c;
    if (key !== st.connKey) {
      st.connKey = key;
      renderConn(c);
    }
    if (c.status === "connected" && !wasConnected) {
      loadCatalog();
      loadWorkflows();
    } else if (c.status === "connected" && !st.catalogLoaded && Date.now() - st.catalogAt > 30000) {
      loadCatalog();
    }
  }

  function refreshConn() {
    return call("GET", "/lever").then(function (res) {
      if (res.status === 200) applyConn(res.body);
      else if (res.status !== 401 && !st.conn) {
        LB.clear($("conn-summary")).appendChild(alertBox("error", "The connection could not be read.",
          [LB.message(res)]));
      }
    });
  }

  /* ---- connecting ------------------------------------------------------------ */

  function submitKey(ev) {
    ev.preventDefault();
    var input = $("api-key"), out = LB.clear($("key-result")), btn = $("key-submit");
    var key = input.value.trim();
    if (!key) {
      out.appendChild(alertBox("error", "Paste a Lever API key first."));
      input.focus();
      return;
    }
    btn.disabled = true;
    out.appendChild(el("p", {class: "muted", text: "Checking the key with Lever\u2026"}));
    call("PUT", "/lever", {api_key: key}).then(function (res) {
      btn.disabled = st.expired;
      LB.clear(out);
      var e = LB.errorOf(res);
      if (res.status === 200) {
        input.value = "";
        st.showConnect = false;
        LB.clear($("conn-note")).appendChild(alertBox("ok", "Lever is connected."));
        applyConn(res.body);
        $("status-h").focus(); /* the form just went away */
      } else if (e.code === "invalid_api_key") {
        out.appendChild(alertBox("error", "Lever did not accept this key.", [
          e.message,
          "Make sure it is a Lever API key from Settings > Integrations and API > API Credentials, " +
          "not a Postings API key (those only publish job postings)."]));
      } else if (e.code === "missing_permissions") {
        var missing = e.missing || [];
        out.appendChild(alertBox("error", "This key is missing " + missing.length +
          (missing.length === 1 ? " permission:" : " permissions:"), null, missing));
        out.lastChild.appendChild(el("p", {text: "Ask a Lever Super Admin to tick " +
          (missing.length === 1 ? "it" : "them") + " for this key under Settings > Integrations and API " +
          "> API Credentials, then paste the key again. Nothing was saved."}));
      } else if (e.code === "lever_unavailable" || res.status === 0) {
        out.appendChild(alertBox("error", "Lever could not be reached.",
          [res.status === 0 ? LB.message(res) : e.message, "Nothing was saved. Try again in a minute."]));
      } else if (res.status !== 401) {
        out.appendChild(alertBox("error", "The key could not be saved.", [LB.message(res)]));
      }
    });
  }

  function startOAuth() {
    var out = LB.clear($("oauth-result")), btn = $("oauth-btn");
    btn.disabled = true;
    call("POST", "/lever/oauth").then(function (res) {
      if (res.status === 200 && res.body && res.body.authorize_url) {
        out.appendChild(el("p", {class: "muted", text: "Opening Lever\u2026"}));
        location.assign(res.body.authorize_url);
        return;
      }
      btn.disabled = st.expired;
      var e = LB.errorOf(res);
      if (e.code === "oauth_not_configured") {
        out.appendChild(alertBox("info", "Sign-in with Lever is not available here.",
          ["Use an API key instead."]));
      } else if (res.status !== 401) {
        out.appendChild(alertBox("error", "Lever sign-in could not start.", [LB.message(res)]));
      }
    });
  }

  function disconnect() {
    if (!window.confirm("Disconnect Lever? Workflows stop running and queued jobs are cancelled.")) return;
    call("DELETE", "/lever").then(function (res) {
      if (res.status >= 200 && res.status < 300) {
        st.catalogLoaded = false;
        LB.clear($("conn-note"));
        refreshConn();
      } else if (res.status !== 401) {
        LB.clear($("hook-summary")).appendChild(alertBox("error", "Could not disconnect.", [LB.message(res)]));
      }
    });
  }

  function reprovision() {
    call("POST", "/lever/webhook/provision").then(function () { refreshConn(); });
  }

  /* ---- stages and postings --------------------------------------------------- */

  function loadCatalog() {
    st.catalogAt = Date.now();
    return Promise.all([call("GET", "/lever/stages"), call("GET", "/lever/postings")]).then(function (r) {
      if (r[0].status === 200) st.stages = (r[0].body && r[0].body.data) || [];
      if (r[1].status === 200) st.postings = (r[1].body && r[1].body.data) || [];
      st.catalogLoaded = r[0].status === 200 && r[1].status === 200;
      fillPickers();
      renderWorkflows();
    });
  }

  function label(list, id) {
    for (var i = 0; i < list.length; i++) if (list[i].id === id) return list[i].text || id;
    return id;
  }

  function stageOptions(select, value, anyText) {
    LB.clear(select);
    if (anyText !== null) select.appendChild(el("option", {text: anyText, attrs: {value: ""}}));
    st.stages.forEach(function (s) {
      select.appendChild(el("option", {text: s.text || s.id, attrs: {value: s.id}}));
    });
    if (value && !st.stages.some(function (s) { return s.id === value; })) {
      select.appendChild(el("option", {text: value + " (not in Lever)", attrs: {value: value}}));
    }
    select.value = value || "";
  }

  function fillPickers() {
    var wf = st.editing || {};
    var trig = wf.trigger || {};
    stageOptions($("wf-to-stage"), trig.to_stage, "Choose a stage");
    stageOptions($("wf-from-stage"), trig.from_stage, "Any stage");
    var box = LB.clear($("wf-postings"));
    var chosen = trig.postings || [];
    if (!st.postings.length) box.appendChild(el("p", {class: "muted", text: "No postings in Lever."}));
    st.postings.forEach(function (p, i) {
      var id = "wf-posting-" + i;
      box.appendChild(el("div", {class: "check"},
        el("input", {attrs: {type: "checkbox", id: id, value: p.id,
          checked: chosen.indexOf(p.id) >= 0}}),
        el("label", {text: (p.text || p.id) + (p.state && p.state !== "published" ? " (" + p.state + ")" : ""),
          attrs: {for: id}})));
    });
    Array.prototype.forEach.call(document.querySelectorAll("#wf-actions select.stage"), function (s) {
      stageOptions(s, s.value || s.getAttribute("data-value"), "Choose a stage");
    });
  }

  /* ---- workflows ------------------------------------------------------------------- */

  var EVENT_TEXT = {stage_changed: "A candidate moves", assessment_completed: "An assessment is completed",
                    assessment_expired: "An assessment expires"};

  function triggerText(t) {
    if (!t) return "";
    if (t.event === "stage_changed") {
      var s = "A candidate moves to " + label(st.stages, t.to_stage);
      if (t.from_stage) s += " from " + label(st.stages, t.from_stage);
      if (t.postings && t.postings.length)
        s += " (postings: " + t.postings.map(function (p) { return label(st.postings, p); }).join(", ") + ")";
      if (t.delay && t.delay !== "0") s += ", after " + t.delay;
      return s;
    }
    var a = EVENT_TEXT[t.event] || t.event;
    if (t.assessment) a += ": " + t.assessment;
    if (t.min_score !== undefined) a += ", score \u2265 " + t.min_score;
    if (t.max_score !== undefined) a += ", score \u2264 " + t.max_score;
    return a;
  }

  function actionsText(actions) {
    return (actions || []).map(function (a) {
      if (a.type === "move_stage") return "Move to " + label(st.stages, a.stage) + guardText(a.only_from);
      return LB.actionText(a);
    }).join("; ");
  }

  function guardText(only) {
    if (only === "any") return " (always)";
    if (only && only.length) return " (only from " + only.map(function (s) { return label(st.stages, s); }).join(", ") + ")";
    return "";
  }

  var REASON_TEXT = {
    in_to_stage: "the candidate is in the trigger's stage", not_in_to_stage: "the candidate is not in the trigger's stage",
    archived: "the candidate is archived", postings_not_matched: "the candidate applied to none of the postings",
    result_trigger: "as if a matching result arrived now", not_invited: "not invited yet",
    already_invited: "already invited", platform_not_configured: "no assessment platform is configured",
    no_email: "the candidate has no email address", moves: "moves the candidate",
    already_in_stage: "already in that stage: nothing to write",
    stage_changed_meanwhile: "the candidate is not in a stage the move starts from",
    writes_note: "writes the note", adds_tags: "adds the tags"};

  function reasonText(r) {
    return REASON_TEXT[r] || r;
  }

  /* A dry run for one candidate: what the workflow would do now; nothing is written. */
  function dryRun(w, input, out, btn) {
    var opp = input.value.trim();
    if (!opp) {
      out.textContent = "Enter a Lever opportunity id.";
      input.focus();
      return;
    }
    btn.disabled = true;
    out.textContent = "Asking Lever…";
    call("POST", "/workflows/" + encodeURIComponent(w.id) + "/dry-run", {opportunity_id: opp}).then(function (res) {
      btn.disabled = st.expired;
      LB.clear(out);
      if (res.status !== 200) {
        if (res.status !== 401) out.textContent = LB.message(res);
        return;
      }
      var r = res.body;
      out.appendChild(el("p", {class: "dry-match", text: (r.matches ? "Matches: " : "Does not match: ") + reasonText(r.reason)}));
      var ol = el("ol", {class: "dry-actions"});
      (r.actions || []).forEach(function (a, i) {
        var text = actionsText([w.actions[i] || {type: a.type}]);
        ol.appendChild(el("li", {attrs: {"data-outcome": a.outcome}},
          LB.badge(a.outcome === "would_run" ? "Would run" : "Would skip", a.outcome === "would_run" ? "ok" : "muted"),
          " " + text + ": " + reasonText(a.reason)));
      });
      out.appendChild(ol);
    });
  }

  function dryRunBox(w) {
    var id = "wf-dry-" + w.id;
    var input = el("input", {attrs: {type: "text", id: id, placeholder: "Lever opportunity id"}});
    var out = el("div", {class: "dry-result", attrs: {role: "status", "aria-live": "polite"}});
    var btn = el("button", {text: "Dry run", class: "secondary", attrs: {type: "button",
      "aria-label": "Dry run " + w.name}, on: {click: function () { dryRun(w, input, out, btn); }}});
    return el("div", {class: "dry-run"},
      el("label", {text: "Try on one candidate (nothing is written)", attrs: {for: id}}),
      el("div", {class: "row"}, input, btn), out);
  }

  function loadWorkflows() {
    return call("GET", "/workflows?limit=200").then(function (res) {
      if (res.status === 200) {
        st.workflows = res.body.data || [];
        renderWorkflows();
      }
    });
  }

  function renderWorkflows() {
    var box = LB.clear($("wf-list"));
    if (!st.workflows.length) {
      box.appendChild(el("p", {class: "muted", text: "No workflows yet."}));
      return;
    }
    var ul = el("ul", {class: "wf-list"});
    st.workflows.forEach(function (w) {
      ul.appendChild(el("li", {class: "card wf", attrs: {"data-id": w.id}},
        el("div", {class: "wf-head"}, el("h3", {text: w.name}),
          LB.badge(w.enabled ? "Enabled" : "Disabled", w.enabled ? "ok" : "muted")),
        el("p", null, el("span", {class: "muted", text: "When: "}), triggerText(w.trigger)),
        el("p", null, el("span", {class: "muted", text: "Then: "}), actionsText(w.actions)),
        el("div", {class: "row"},
          el("button", {text: "Edit", class: "secondary", attrs: {type: "button", "aria-label": "Edit " + w.name},
            on: {click: function () { openForm(w); }}}),
          el("button", {text: w.enabled ? "Disable" : "Enable", class: "secondary",
            attrs: {type: "button", "aria-label": (w.enabled ? "Disable " : "Enable ") + w.name},
            on: {click: function () { toggle(w); }}}),
          w.trigger && w.trigger.event === "stage_changed" ?
            el("button", {text: "Backfill", class: "secondary",
              attrs: {type: "button", "aria-label": "Backfill " + w.name,
                      title: "Apply it to the candidates already in the stage"},
              on: {click: function () { startBackfill(w); }}}) : null,
          el("button", {text: "Delete", class: "danger", attrs: {type: "button", "aria-label": "Delete " + w.name},
            on: {click: function () { removeWorkflow(w); }}})),
        dryRunBox(w),
        el("div", {class: "backfill", attrs: {"data-wf": w.id, "aria-live": "polite"}})));
    });
    box.appendChild(ul);
    Object.keys(st.backfills).forEach(renderBackfill);
  }

  /* ---- backfills: progress polled from GET /backfills/{id} ------------------------ */

  var BF_POLL_MS = 1000;
  var BF_TEXT = {running: "Backfill running", done: "Backfill done", failed: "Backfill failed",
                 cancelled: "Backfill cancelled"};

  function startBackfill(w) {
    call("POST", "/workflows/" + encodeURIComponent(w.id) + "/backfill").then(function (res) {
      if (res.status === 202) {
        var cur = st.backfills[w.id];
        if (!cur || cur.id !== res.body.id)
          st.backfills[w.id] = {id: res.body.id, workflow_id: w.id, status: "running",
                                listed: 0, queued: 0, skipped: 0};
        renderBackfill(w.id);
        pollBackfills();
      } else if (res.status !== 401) {
        setStatus(LB.message(res));
      }
    });
  }

  function cancelBackfill(b) {
    call("DELETE", "/backfills/" + encodeURIComponent(b.id)).then(function (res) {
      if (res.status === 200) {
        st.backfills[b.workflow_id] = res.body;
        renderBackfill(b.workflow_id);
      } else if (res.status !== 401) {
        setStatus(LB.message(res));
      }
    });
  }

  function pollBackfills() {
    var running = Object.keys(st.backfills).filter(function (k) {
      return st.backfills[k].status === "running";
    });
    if (!running.length || st.expired) {
      st.bfTimer = null;
      return;
    }
    Promise.all(running.map(function (k) {
      return call("GET", "/backfills/" + encodeURIComponent(st.backfills[k].id)).then(function (res) {
        if (res.status === 200 && st.backfills[k] && st.backfills[k].id === res.body.id) {
          st.backfills[k] = res.body;
          renderBackfill(k);
        }
      });
    })).then(function () {
      if (st.bfTimer) clearTimeout(st.bfTimer);
      st.bfTimer = setTimeout(pollBackfills, BF_POLL_MS);
    });
  }

  /* The progress of the workflow's backfill in its card: a bar (indeterminate
   * while Lever's list is read, full once done), the share of queued and
   * skipped among the candidates listed, the counts and a cancel button. */
  function renderBackfill(wfId) {
    var b = st.backfills[wfId];
    var box = document.querySelector('.backfill[data-wf="' + wfId + '"]');
    if (!b || !box) return;
    LB.clear(box);
    var running = b.status === "running";
    var bar = el("progress", {class: "bf-progress", attrs: {max: "1", "aria-label": "Backfill progress"}});
    if (!running) bar.value = 1;
    var split = el("div", {class: "bf-split", attrs: {"aria-hidden": "true"}});
    var q = el("span", {class: "bf-queued"}), sk = el("span", {class: "bf-skipped"});
    var total = b.listed > 0 ? b.listed : 1;
    q.style.width = (100 * b.queued / total) + "%";
    sk.style.width = (100 * b.skipped / total) + "%";
    split.appendChild(q);
    split.appendChild(sk);
    box.appendChild(el("p", {class: "bf-line"},
      LB.badge(BF_TEXT[b.status] || b.status, b.status === "done" ? "ok" :
               b.status === "failed" ? "bad" : "muted"),
      el("span", {class: "bf-counts",
                  text: " " + b.listed + " listed, " + b.queued + " queued, " + b.skipped + " skipped"}),
      b.last_error ? el("span", {class: "muted", text: " \u2013 " + b.last_error}) : null));
    box.appendChild(bar);
    box.appendChild(split);
    if (running)
      box.appendChild(el("button", {text: "Cancel backfill", class: "secondary",
        attrs: {type: "button"}, on: {click: function () { cancelBackfill(b); }}}));
  }

  function bodyOf(w) {
    return {name: w.name, enabled: w.enabled, trigger: w.trigger, actions: w.actions};
  }

  function setStatus(text) {
    $("wf-status").textContent = text;
  }

  function toggle(w) {
    var b = bodyOf(w);
    b.enabled = !w.enabled;
    call("PUT", "/workflows/" + encodeURIComponent(w.id), b).then(function (res) {
      if (res.status === 200) {
        setStatus("\u201c" + w.name + "\u201d is now " + (b.enabled ? "enabled." : "disabled."));
        loadWorkflows();
      } else if (res.status !== 401) {
        setStatus(LB.message(res));
      }
    });
  }

  function removeWorkflow(w) {
    if (!window.confirm("Delete the workflow \u201c" + w.name + "\u201d?")) return;
    call("DELETE", "/workflows/" + encodeURIComponent(w.id)).then(function (res) {
      if (res.status >= 200 && res.status < 300) {
        setStatus("\u201c" + w.name + "\u201d was deleted.");
        loadWorkflows();
      } else if (res.status !== 401) {
        setStatus(LB.message(res));
      }
    });
  }

  var ACTION_TYPES = [["send_assessment", "Send an assessment"], ["add_note", "Add a note in Lever"],
                      ["add_tags", "Add tags"], ["move_stage", "Move to a stage"]];

  function field(id, text, input) {
    input.id = id;
    return el("div", {class: "field"}, el("label", {text: text, attrs: {for: id}}), input);
  }

  function actionRow(a) {
    var n = ++st.actionSeq, li = el("li", {class: "action"});
    var type = el("select", {attrs: {id: "wf-act-" + n + "-type"}});
    ACTION_TYPES.forEach(function (t) { type.appendChild(el("option", {text: t[1], attrs: {value: t[0]}})); });
    type.value = (a && a.type) || "send_assessment";
    var fields = el("div", {class: "action-fields"});
    var inputs = {};

    function render() {
      LB.clear(fields);
      inputs = {};
      var v = a && a.type === type.value ? a : {};
      if (type.value === "send_assessment") {
        inputs.assessment = el("input", {attrs: {type: "text", value: v.assessment || "", required: true}});
        fields.appendChild(field("wf-act-" + n + "-assessment", "Assessment", inputs.assessment));
      } else if (type.value === "add_note") {
        inputs.text = el("textarea", {text: v.text || "", attrs: {rows: 3, required: true}});
        fields.appendChild(field("wf-act-" + n + "-text", "Note text", inputs.text));
        fields.appendChild(el("p", {class: "muted small", text: "You can use {{candidate.name}}, {{candidate.email}}, " +
          "{{assessment}}, {{score}}, {{max_score}}, {{report_url}}, {{invitation_url}}."}));
        inputs.secret = el("input", {attrs: {type: "checkbox", id: "wf-act-" + n + "-secret", checked: !!v.secret}});
        fields.appendChild(el("div", {class: "check"}, inputs.secret,
          el("label", {text: "Secret note", attrs: {for: "wf-act-" + n + "-secret"}})));
      } else if (type.value === "add_tags") {
        inputs.tags = el("input", {attrs: {type: "text", value: (v.tags || []).join(", "), required: true}});
        fields.appendChild(field("wf-act-" + n + "-tags", "Tags (comma separated)", inputs.tags));
      } else if (type.value === "move_stage") {
        inputs.stage = el("select", {class: "stage", attrs: {"data-value": v.stage || ""}});
        stageOptions(inputs.stage, v.stage, "Choose a stage");
        fields.appendChild(field("wf-act-" + n + "-stage", "Stage", inputs.stage));
        var only = v.only_from;
        inputs.guard = el("select", null,
          el("option", {text: "Default: after a result, only from the stage the invitation was sent in", attrs: {value: ""}}),
          el("option", {text: "Always (no check)", attrs: {value: "any"}}),
          el("option", {text: "Only from these stages", attrs: {value: "list"}}));
        inputs.guard.value = only === "any" ? "any" : only && only.length ? "list" : "";
        fields.appendChild(field("wf-act-" + n + "-guard", "Move only if the candidate is still", inputs.guard));
        inputs.from = el("fieldset", {class: "only-from"}, el("legend", {text: "Stages the move starts from"}));
        st.stages.forEach(function (sg, k) {
          var cid = "wf-act-" + n + "-from-" + k;
          inputs.from.appendChild(el("div", {class: "check"},
            el("input", {attrs: {type: "checkbox", id: cid, value: sg.id,
              checked: Array.isArray(only) && only.indexOf(sg.id) >= 0}}),
            el("label", {text: sg.text || sg.id, attrs: {for: cid}})));
        });
        var showFrom = function () { inputs.from.hidden = inputs.guard.value !== "list"; };
        inputs.guard.addEventListener("change", showFrom);
        showFrom();
        fields.appendChild(inputs.from);
      }
    }
    type.addEventListener("change", render);
    render();

    li._collect = function () {
      var out = {type: type.value};
      if (type.value === "send_assessment") out.assessment = inputs.assessment.value.trim();
      if (type.value === "add_note") {
        out.text = inputs.text.value;
        if (inputs.secret.checked) out.secret = true;
      }
      if (type.value === "add_tags") {
        out.tags = inputs.tags.value.split(",").map(function (s) { return s.trim(); })
          .filter(function (s) { return s; });
      }
      if (type.value === "move_stage") {
        out.stage = inputs.stage.value;
        if (inputs.guard.value === "any") out.only_from = "any";
        if (inputs.guard.value === "list") {
          out.only_from = Array.prototype.filter.call(inputs.from.querySelectorAll("input"),
            function (c) { return c.checked; }).map(function (c) { return c.value; });
        }
      }
      return out;
    };
    li._focus = function () { (fields.querySelector("input, textarea, select") || type).focus(); };
    var remove = el("button", {text: "Remove", class: "link", attrs: {type: "button",
      "aria-label": "Remove action " + n}, on: {click: function () {
        li.parentNode.removeChild(li);
        $("wf-add-action").focus();
      }}});
    li.appendChild(el("div", {class: "action-head"},
      el("label", {text: "Action", attrs: {for: type.id}}), remove));
    li.appendChild(type);
    li.appendChild(fields);
    return li;
  }

  function showTriggerFields() {
    var ev = $("wf-event").value;
    $("wf-stage-fields").hidden = ev !== "stage_changed";
    $("wf-assess-fields").hidden = ev === "stage_changed";
    $("wf-scores").hidden = ev !== "assessment_completed";
  }

  function openForm(w) {
    st.editing = w || null;
    var t = (w && w.trigger) || {event: "stage_changed"};
    $("wf-form-h").textContent = w ? "Edit \u201c" + w.name + "\u201d" : "New workflow";
    $("wf-name").value = w ? w.name : "";
    $("wf-event").value = t.event;
    $("wf-assessment").value = t.assessment || "";
    $("wf-delay").value = t.delay || "";
    $("wf-min-score").value = t.min_score !== undefined ? t.min_score : "";
    $("wf-max-score").value = t.max_score !== undefined ? t.max_score : "";
    $("wf-enabled").checked = w ? !!w.enabled : true;
    fillPickers();
    var list = LB.clear($("wf-actions"));
    ((w && w.actions) || [{type: "send_assessment"}]).forEach(function (a) { list.appendChild(actionRow(a)); });
    $("wf-error").hidden = true;
    showTriggerFields();
    $("wf-form").hidden = false;
    $("wf-new").hidden = true;
    $("wf-name").focus();
  }

  function closeForm() {
    st.editing = null;
    $("wf-form").hidden = true;
    $("wf-new").hidden = false;
    $("wf-new").focus();
  }

  function formError(text, focusNode) {
    var e = $("wf-error");
    e.textContent = text;
    e.hidden = false;
    if (focusNode) focusNode.focus();
  }

  function collect() {
    var ev = $("wf-event").value;
    var trigger = {event: ev};
    if (ev === "stage_changed") {
      trigger.to_stage = $("wf-to-stage").value;
      if ($("wf-from-stage").value) trigger.from_stage = $("wf-from-stage").value;
      var posts = Array.prototype.filter.call(document.querySelectorAll("#wf-postings input"),
        function (c) { return c.checked; }).map(function (c) { return c.value; });
      if (posts.length) trigger.postings = posts;
      var delay = $("wf-delay").value.trim();
      if (delay) trigger.delay = delay;
    } else {
      var a = $("wf-assessment").value.trim();
      if (a) trigger.assessment = a;
      if (ev === "assessment_completed") {
        if ($("wf-min-score").value !== "") trigger.min_score = Number($("wf-min-score").value);
        if ($("wf-max-score").value !== "") trigger.max_score = Number($("wf-max-score").value);
      }
    }
    var actions = Array.prototype.map.call($("wf-actions").children, function (li) { return li._collect(); });
    return {name: $("wf-name").value.trim(), enabled: $("wf-enabled").checked, trigger: trigger, actions: actions};
  }

  /* Focus the input a server error names: "name", "trigger.to_stage", "actions[1].tags". */
  function fieldNode(f) {
    if (!f) return null;
    var m = /^actions\[(\d+)\]/.exec(f);
    if (m) {
      var li = $("wf-actions").children[Number(m[1])];
      return li ? {focus: li._focus} : $("wf-add-action");
    }
    var map = {"name": "wf-name", "trigger.event": "wf-event", "trigger.to_stage": "wf-to-stage",
               "trigger.from_stage": "wf-from-stage", "trigger.assessment": "wf-assessment",
               "trigger.delay": "wf-delay",
               "trigger.min_score": "wf-min-score", "trigger.max_score": "wf-max-score",
               "actions": "wf-add-action", "enabled": "wf-enabled"};
    return map[f] ? $(map[f]) : null;
  }

  function saveWorkflow(ev) {
    ev.preventDefault();
    var body = collect();
    if (!body.name) return formError("Give the workflow a name.", $("wf-name"));
    if (body.trigger.event === "stage_changed" && !body.trigger.to_stage)
      return formError("Choose the stage that starts the workflow.", $("wf-to-stage"));
    if (!body.actions.length) return formError("Add at least one action.", $("wf-add-action"));
    var w = st.editing;
    var btn = $("wf-save");
    btn.disabled = true;
    var req = w ? call("PUT", "/workflows/" + encodeURIComponent(w.id), body)
                : call("POST", "/workflows", body);
    req.then(function (res) {
      btn.disabled = st.expired;
      if (res.status === 200 || res.status === 201) {
        setStatus("\u201c" + body.name + "\u201d was saved.");
        closeForm();
        loadWorkflows();
      } else if (res.status !== 401) {
        var e = LB.errorOf(res);
        formError((e.field ? e.field + ": " : "") + LB.message(res), fieldNode(e.field));
      }
    });
  }

  /* ---- events and failed jobs ------------------------------------------------------- */

  var EVENT_TYPES = {candidateStageChange: "Stage change", assessment_completed: "Assessment completed",
                     assessment_expired: "Assessment expired"};
  var EVENT_KIND = {accepted: "ok", duplicate: "muted", ignored: "muted"};

  function refreshActivity() {
    return Promise.all([call("GET", "/events?limit=20"), call("GET", "/jobs?status=failed&limit=20")])
      .then(function (r) {
        if (r[0].status === 200) {
          var k = JSON.stringify(r[0].body.data);
          if (k !== st.eventsKey) { st.eventsKey = k; renderEvents(r[0].body.data || []); }
        }
        if (r[1].status === 200) {
          var j = JSON.stringify(r[1].body.data);
          if (j !== st.jobsKey) { st.jobsKey = j; renderJobs(r[1].body.data || []); }
        }
      });
  }

  function renderEvents(list) {
    var box = LB.clear($("events"));
    if (!list.length) {
      box.appendChild(el("p", {class: "muted", text: "No events yet. They appear here as Lever sends them."}));
      return;
    }
    box.appendChild(LB.table("Recent events", ["Received", "Event", "Candidate", "Result", "Jobs"],
      list.map(function (e) {
        return [LB.timeEl(e.received_at), EVENT_TYPES[e.type] || e.type, e.opportunity_id || "",
                LB.badge(e.status, EVENT_KIND[e.status]), String((e.jobs || []).length)];
      })));
  }

  function renderJobs(list) {
    var box = LB.clear($("jobs"));
    if (!list.length) {
      box.appendChild(el("p", {class: "muted", text: "No failed jobs."}));
      return;
    }
    box.appendChild(LB.table("Failed jobs", ["Updated", "Action", "Candidate", "Error", "Tries", ""],
      list.map(function (j) {
        var a = j.action || {};
        var text = a.type === "move_stage" ? "Move to " + label(st.stages, a.stage) : LB.actionText(a);
        return [LB.timeEl(j.updated_at), text, j.opportunity_id || "", j.last_error || "",
                String(j.attempts || 0),
                el("button", {text: "Retry", class: "secondary", attrs: {type: "button",
                  "aria-label": "Retry: " + text}, on: {click: function (ev) { retry(j, ev.target); }}})];
      })));
  }

  function retry(j, btn) {
    btn.disabled = true;
    call("POST", "/jobs/" + encodeURIComponent(j.id) + "/retry").then(function (res) {
      if (res.status === 202) {
        $("jobs-status").textContent = "The job was queued again.";
        refreshActivity();
      } else {
        btn.disabled = st.expired;
        if (res.status !== 401) $("jobs-status").textContent = LB.message(res);
      }
    });
  }

  /* ---- start ------------------------------------------------------------------------- */

  function tick() {
    if (st.expired || document.hidden) return;
    refreshConn().then(function () {
      if (st.conn && st.conn.status !== "disconnected") refreshActivity();
    });
  }

  function start() {
    $("key-form").addEventListener("submit", submitKey);
    $("oauth-btn").addEventListener("click", startOAuth);
    $("disconnect").addEventListener("click", disconnect);
    $("reprovision").addEventListener("click", reprovision);
    $("wf-new").addEventListener("click", function () { openForm(null); });
    $("wf-cancel").addEventListener("click", closeForm);
    $("wf-form").addEventListener("submit", saveWorkflow);
    $("wf-event").addEventListener("change", showTriggerFields);
    $("wf-add-action").addEventListener("click", function () {
      var li = actionRow(null);
      $("wf-actions").appendChild(li);
      li.querySelector("select").focus();
    });
    document.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape" && !$("wf-form").hidden) closeForm();
    });
    call("GET", "").then(function (res) {
      if (res.status === 200 && res.body && res.body.name) {
        $("tenant-name").textContent = "For " + res.body.name;
        document.title = "Connect Lever \u2013 " + res.body.name;
      }
    });
    tick();
    st.timer = setInterval(tick, POLL_MS);
  }

  start();
})();
