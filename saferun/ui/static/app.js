/* SafeRun dashboard: live regions over server-sent events, the decision tabs, and the parameter editor's
 * checks. No framework; the pages work without this script (forms post, lists show the state at load). */
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  document.body && document.body.classList.add("js");

  // ------------------------------------------------------------------ small helpers
  function each(root, selector, fn) {
    Array.prototype.forEach.call((root || document).querySelectorAll(selector), fn);
  }

  function applyWidths(root) {
    each(root, "[data-width]", function (el) {
      var w = Math.max(0, Math.min(100, parseFloat(el.getAttribute("data-width")) || 0));
      el.style.width = w + "%";
    });
  }

  function relative(date) {
    var seconds = Math.round((date.getTime() - Date.now()) / 1000);
    var abs = Math.abs(seconds);
    var text;
    if (abs < 60) text = abs + "s";
    else if (abs < 3600) text = Math.floor(abs / 60) + "m " + (abs % 60) + "s";
    else if (abs < 86400) text = Math.floor(abs / 3600) + "h " + Math.floor((abs % 3600) / 60) + "m";
    else text = Math.floor(abs / 86400) + "d";
    return seconds >= 0 ? "in " + text : text + " ago";
  }

  function tickTimes(root) {
    each(root, "time[data-relative]", function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) return;
      if (!el.title) el.title = el.textContent;
      el.textContent = relative(d);
    });
  }

  function enhance(root) {
    applyWidths(root);
    tickTimes(root);
  }

  // ------------------------------------------------------------------ live regions
  var status = document.getElementById("live-status");
  function setStatus(state, text) {
    if (!status) return;
    status.setAttribute("data-state", state);
    var label = status.querySelector(".live-text");
    if (label) label.textContent = text;
  }

  var regions = [];
  each(document, "[data-live]", function (el) { regions.push(el); });
  var badge = document.getElementById("nav-pending-count");

  function ids(el) {
    var out = {};
    each(el, "[data-request-id]", function (item) { out[item.getAttribute("data-request-id")] = true; });
    return out;
  }

  // A region with data-live-every="ms" refreshes at most that often (the stats page's charts run their
  // aggregate queries on each refresh; a busy server sends many events a second): a change inside the
  // interval is fetched once when it ends, so the last state always shows.
  function throttled(el) {
    var every = parseInt(el.getAttribute("data-live-every"), 10) || 0;
    if (!every) return false;
    var now = Date.now();
    var wait = (el.__lastRefresh || 0) + every - now;
    if (wait <= 0) { el.__lastRefresh = now; return false; }
    if (!el.__later) {
      el.__later = setTimeout(function () { el.__later = null; refreshRegion(el); }, wait);
    }
    return true;
  }

  function refreshRegion(el) {
    if (throttled(el)) return null;
    var url = el.getAttribute("data-live");
    return fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (res) {
        if (res.status === 401) { window.location.reload(); return null; } // signed out: go sign in
        return res.ok ? res.text() : null;
      })
      .then(function (html) {
        if (html === null || html === el.getAttribute("data-html")) return;
        var before = ids(el);
        var checked = pickedIds(el);
        el.innerHTML = html;
        keepPicked(el, checked);
        el.setAttribute("data-html", html);
        each(el, "[data-request-id]", function (item) {
          if (!before[item.getAttribute("data-request-id")]) item.classList.add("is-new");
        });
        enhance(el);
        if (el.querySelector("[data-closed]")) closeDecision(el);
        document.dispatchEvent(new CustomEvent("saferun:updated", { detail: { region: el.id } }));
      })
      .catch(function () { /* the next event or poll tries again */ });
  }

  function refreshBadge() {
    if (!badge) return;
    fetch("/ui/fragments/nav", { credentials: "same-origin" })
      .then(function (res) { return res.ok ? res.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var n = parseInt(text, 10) || 0;
        badge.textContent = n ? String(n) : "";
        badge.classList.toggle("badge-zero", !n);
      })
      .catch(function () {});
  }

  var pendingWorkflows = {};
  var anyWorkflow = false;
  var timer = null;
  function schedule(workflowId) {
    if (workflowId) pendingWorkflows[workflowId] = true;
    else anyWorkflow = true;
    if (timer) return;
    timer = setTimeout(flush, 200);
  }

  function flush() {
    timer = null;
    var touched = pendingWorkflows, all = anyWorkflow;
    pendingWorkflows = {};
    anyWorkflow = false;
    regions.forEach(function (el) {
      var only = el.getAttribute("data-workflow");
      if (only && !all && !touched[only]) return;
      refreshRegion(el);
    });
    refreshBadge();
  }

  var pollTimer = null;
  function startPolling() {
    if (pollTimer) return;
    setStatus("polling", "Polling");
    pollTimer = setInterval(function () { schedule(null); }, 2500);
  }

  function connect() {
    if (!regions.length && !badge) return;
    if (!window.EventSource) { startPolling(); return; }
    var after = parseInt(document.body.getAttribute("data-events-after"), 10) || 0;
    var source = new EventSource("/api/events?after=" + after);
    var opened = false;
    source.onopen = function () {
      opened = true;
      setStatus("live", "Live");
      if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
    };
    source.addEventListener("workflow", function (event) {
      var workflowId = null;
      try { workflowId = JSON.parse(event.data).workflow_id || null; } catch (e) { /* refresh everything */ }
      schedule(workflowId);
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        // the stream is unavailable (refused or not served): keep the page fresh by polling instead
        startPolling();
        setTimeout(connect, 30000);
      } else {
        setStatus("connecting", opened ? "Reconnecting…" : "Connecting…");
      }
    };
  }

  // ------------------------------------------------------------------ decision tabs and forms
  var panel = document.querySelector(".decision-panel");
  // Decided (here or elsewhere): the buttons give way to the outcome the status fragment carries in a
  // <template data-outcome-card>, so nobody is left clicking a decision that can no longer be made.
  function closeDecision(source) {
    if (!panel) return;
    panel.classList.add("is-closed");
    each(panel, "button, input, textarea, select", function (el) { el.disabled = true; });
    var card = source && source.querySelector("template[data-outcome-card]");
    var target = panel.querySelector(".decision-card");
    if (card && target) {
      target.innerHTML = card.innerHTML;
      enhance(target);
    }
    each(document, ".jump-decision", function (el) { el.hidden = true; });
  }

  function selectTab(name, focus) {
    each(document, ".tab[data-tab]", function (tab) {
      var on = tab.getAttribute("data-tab") === name;
      tab.setAttribute("aria-selected", on ? "true" : "false");
      tab.tabIndex = on ? 0 : -1;
      if (on && focus) tab.focus();
    });
    each(document, ".decision-form[data-panel]", function (form) {
      form.classList.toggle("is-active", form.getAttribute("data-panel") === name);
    });
  }

  function setupTabs() {
    var tabs = document.querySelectorAll(".tab[data-tab]");
    if (!tabs.length) return;
    var active = document.querySelector('.tab[aria-selected="true"]') || tabs[0];
    selectTab(active.getAttribute("data-tab"));
    each(document, ".tab[data-tab]", function (tab) {
      tab.addEventListener("click", function () { selectTab(tab.getAttribute("data-tab")); });
      tab.addEventListener("keydown", function (e) {
        if (e.key !== "ArrowRight" && e.key !== "ArrowLeft") return;
        var list = Array.prototype.slice.call(tabs);
        var i = list.indexOf(tab) + (e.key === "ArrowRight" ? 1 : -1);
        selectTab(list[(i + list.length) % list.length].getAttribute("data-tab"), true);
      });
    });
  }

  // one "acting as" name for all three forms
  function setupActingAs() {
    var inputs = document.querySelectorAll('[data-sync="acting_as"]');
    Array.prototype.forEach.call(inputs, function (input) {
      input.addEventListener("input", function () {
        Array.prototype.forEach.call(inputs, function (other) { if (other !== input) other.value = input.value; });
      });
    });
  }

  var INTEGER = /^[+-]?\d+$/;
  var NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

  function jsonType(v) {
    if (v === null) return "null";
    if (Array.isArray(v)) return "array";
    return typeof v === "object" ? "object" : typeof v;
  }

  // a value quoted as saferun.domain.parameter_schema.show quotes it (JSON)
  function shown(text) {
    return NUMBER.test(text.trim()) ? String(parseFloat(text)) : JSON.stringify(text);
  }

  // the schema's limits, in the words of saferun.domain.parameter_schema.message
  function limits(field, value) {
    var raw = field.getAttribute("data-limits");
    if (!raw) return null;
    var l = JSON.parse(raw);
    var v = JSON.stringify(value);
    if (typeof value === "number") {
      if ("minimum" in l && value < l.minimum) return "must be at least " + l.minimum + ", got " + v;
      if ("maximum" in l && value > l.maximum) return "must be at most " + l.maximum + ", got " + v;
      if ("exclusiveMinimum" in l && value <= l.exclusiveMinimum) return "must be greater than " + l.exclusiveMinimum + ", got " + v;
      if ("exclusiveMaximum" in l && value >= l.exclusiveMaximum) return "must be less than " + l.exclusiveMaximum + ", got " + v;
    }
    if (typeof value === "string") {
      if ("minLength" in l && value.length < l.minLength) return "must be at least " + l.minLength + " characters long";
      if ("maxLength" in l && value.length > l.maxLength) return "must be at most " + l.maxLength + " characters long";
      if ("pattern" in l && !(new RegExp(l.pattern, "u")).test(value)) return "must match the pattern " + l.pattern + ", got " + v;
    }
    return null;
  }

  // the same rules as saferun.ui.review.parse_modifications on the server
  function check(field) {
    var result = checkType(field);
    if (result.error || !result.changed || !("value" in result)) return result;
    var error = limits(field, result.value);
    return error ? { error: error } : result;
  }

  function checkType(field) {
    var input = field.querySelector("input, textarea, select");
    var kind = field.getAttribute("data-kind");
    var raw = input.value;
    var text = raw.trim();
    var original = input.getAttribute("data-original");
    if (kind === "integer") {
      if (!INTEGER.test(text)) return { error: "expected a whole number, got " + shown(raw) };
      return { changed: parseInt(text, 10) !== parseInt(original, 10), value: parseInt(text, 10) };
    }
    if (kind === "number") {
      if (!NUMBER.test(text)) return { error: "expected a number, got " + JSON.stringify(raw) };
      if (!isFinite(parseFloat(text))) return { error: "expected a finite number, got '" + raw + "'" };
      return { changed: parseFloat(text) !== parseFloat(original), value: parseFloat(text) };
    }
    if (kind === "json") {
      var value;
      if (!text) {
        if (input.getAttribute("data-required")) return { error: "give the parameters as a JSON object" };
        return { error: "not valid JSON: empty" };
      }
      try { value = JSON.parse(text); } catch (e) { return { error: "not valid JSON: " + e.message }; }
      var want = field.getAttribute("data-json-type");
      if (input.getAttribute("data-required")) {
        if (jsonType(value) !== "object" || !Object.keys(value).length) return { error: "expected a non-empty JSON object" };
        return { changed: true };
      }
      if (want && want !== "null" && value !== null && jsonType(value) !== want) {
        return { error: "expected a JSON " + want + " like the proposed value, got " + jsonType(value) };
      }
      var before;
      try { before = JSON.parse(original); } catch (e) { before = undefined; }
      return { changed: JSON.stringify(value) !== JSON.stringify(before) };
    }
    if (kind === "string" || kind === "text") return { changed: raw !== original, value: raw };
    return { changed: raw !== original };
  }

  function showError(holder, message) {
    var slot = holder.querySelector(".field-error");
    var input = holder.querySelector("input, textarea, select");
    if (slot) {
      slot.textContent = message || "";
      slot.hidden = !message;
    }
    if (input && input.type !== "hidden") {
      if (message) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
  }

  function setupModify(form) {
    var fields = form.querySelectorAll(".param");
    Array.prototype.forEach.call(fields, function (field) {
      var input = field.querySelector("input, textarea, select");
      var update = function () {
        var result = check(field);
        field.classList.toggle("is-changed", !!result.changed);
        if (!result.error) showError(field, "");
      };
      input.addEventListener("input", update);
      input.addEventListener("change", function () {
        var result = check(field);
        showError(field, result.error || "");
      });
      update();
    });
  }

  function validate(form) {
    var ok = true;
    var firstBad = null;
    var acting = form.querySelector('[name="acting_as"]');
    if (acting) {
      var label = acting.closest(".field");
      if (!acting.value.trim()) {
        showError(label, "Type the name you decide as (it is recorded with the decision).");
        ok = false; firstBad = firstBad || acting;
      } else showError(label, "");
    }
    if (form.getAttribute("data-panel") === "REJECTED") {
      var why = form.querySelector('[name="rationale"]');
      var holder = why.closest(".field");
      if (!why.value.trim()) {
        showError(holder, "Say why you reject: the agent and the poster see this rationale.");
        ok = false; firstBad = firstBad || why;
      } else showError(holder, "");
    }
    if (form.getAttribute("data-modify")) {
      var changed = 0;
      each(form, ".param", function (field) {
        var result = check(field);
        showError(field, result.error || "");
        if (result.error) { ok = false; firstBad = firstBad || field.querySelector("input, textarea, select"); }
        if (result.changed) changed += 1;
      });
      var formError = form.querySelector(".form-error");
      if (ok && !changed) {
        ok = false;
        if (formError) { formError.textContent = "Change at least one parameter to modify (or approve as proposed)."; formError.hidden = false; }
      } else if (formError) { formError.hidden = true; }
    }
    if (firstBad) firstBad.focus();
    return ok;
  }

  function setupForms() {
    each(document, ".decision-form", function (form) {
      form.noValidate = true; // our checks show messages inline; the server checks again
      if (form.getAttribute("data-modify")) setupModify(form);
      form.addEventListener("submit", function (e) {
        if (!validate(form)) { e.preventDefault(); return; }
        var button = form.querySelector('button[type="submit"]');
        if (button) { setTimeout(function () { button.disabled = true; }, 0); }
      });
    });
  }

  // ------------------------------------------------------------------ batch selection on the queue
  // The checkboxes live in the refreshed list but belong to the batch form (form="batch-form"); a
  // refresh keeps what was ticked, and the form says how many are selected.
  function pickedIds(root) {
    var out = {};
    each(root, 'input[name="request_id"][form="batch-form"]:checked', function (box) { out[box.value] = true; });
    return out;
  }

  function keepPicked(root, picked) {
    each(root, 'input[name="request_id"][form="batch-form"]', function (box) {
      if (picked[box.value]) box.checked = true;
    });
    updateBatch();
  }

  function updateBatch() {
    var form = document.getElementById("batch-form");
    if (!form) return;
    var boxes = document.querySelectorAll('input[name="request_id"][form="batch-form"]');
    var n = 0;
    Array.prototype.forEach.call(boxes, function (box) { if (box.checked) n += 1; });
    var count = document.getElementById("batch-count");
    if (count) count.textContent = n ? n + " selected" : "Select requests to approve or reject them together";
    each(form, 'button[name="decision"]', function (button) { button.disabled = !n; });
    var all = form.querySelector("[data-batch-all]");
    if (all) {
      all.checked = n > 0 && n === boxes.length;
      all.indeterminate = n > 0 && n < boxes.length;
    }
  }

  function setupBatch() {
    var form = document.getElementById("batch-form");
    if (!form) return;
    var all = form.querySelector("[data-batch-all]");
    if (all) {
      all.addEventListener("change", function () {
        each(document, 'input[name="request_id"][form="batch-form"]', function (box) { box.checked = all.checked; });
        updateBatch();
      });
    }
    document.addEventListener("change", function (e) {
      var t = e.target;
      if (t && t.name === "request_id" && t.getAttribute("form") === "batch-form") updateBatch();
    });
    form.addEventListener("submit", function (e) {
      var button = e.submitter;
      if (button && button.value === "REJECTED") {
        var why = form.querySelector('[name="rationale"]');
        if (why && !why.value.trim()) {
          e.preventDefault();
          why.setAttribute("aria-invalid", "true");
          why.focus();
          var count = document.getElementById("batch-count");
          if (count) count.textContent = "Say why you reject: the agents and the posters see this rationale.";
        }
      }
    });
    updateBatch();
  }

  // ------------------------------------------------------------------ start
  enhance(document);
  regions.forEach(function (el) { el.setAttribute("data-html", el.innerHTML); });
  setInterval(function () { tickTimes(document); }, 1000);
  setupTabs();
  setupActingAs();
  setupForms();
  setupBatch();
  if (document.querySelector("[data-closed]")) closeDecision();
  if (badge && !badge.textContent.trim()) refreshBadge();
  connect();
})();
