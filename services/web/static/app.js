// Whistle pages: light progressive enhancement. Every page works without this file;
// with it, the board refreshes itself, countdowns tick and the operator's flow is live.
// Data goes into the page with textContent only (never as HTML).
(function () {
  "use strict";

  function texts() {
    var out = {};
    var tpl = document.getElementById("i18n");
    if (!tpl) return out;
    tpl.content.querySelectorAll("[data-key]").forEach(function (el) {
      out[el.dataset.key] = el.textContent;
    });
    return out;
  }
  var T = texts();
  var zh = document.documentElement.lang.indexOf("zh") === 0;

  function fill(template, values) {
    return (template || "").replace(/\{(\w+)\}/g, function (_, k) {
      return values[k] === undefined ? "" : values[k];
    });
  }

  function duration(seconds) {
    seconds = Math.floor(Math.abs(seconds));
    var units = zh ? ["天", "小时", "分", "秒"] : [" d", " h", " min", " s"];
    var parts = [Math.floor(seconds / 86400), Math.floor(seconds % 86400 / 3600),
                 Math.floor(seconds % 3600 / 60), seconds % 60];
    var out = [];
    for (var i = 0; i < parts.length && out.length < 2; i++) {
      if (parts[i]) out.push(parts[i] + units[i]);
    }
    if (!out.length) out.push("0" + units[3]);
    return out.join(zh ? "" : " ");
  }

  // Countdowns: every [data-due] cell shows the time left (or over) and ticks.
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-due]").forEach(function (el) {
      if (!el.dataset.due) return;
      var left = (Date.parse(el.dataset.due) - now) / 1000;
      el.textContent = fill(left >= 0 ? T.due_in : T.due_over,
                            {kind: el.dataset.kind || "", left: duration(left)});
      el.classList.toggle("late", left < 0);
    });
  }

  // The desk's live board: poll the JSON the page was rendered from, re-draw the rows.
  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  // The rows are drawn again only when the board changed, and the issue link that had
  // the keyboard's focus has it again: redrawn every second, the board took the focus
  // away from a keyboard or screen-reader user on a row, and Enter opened nothing.
  var drawn = null;

  function drawBoard(body, data) {
    var updated = document.getElementById("board-updated");
    // In the zone the page's own times are in (WHISTLE_TZ), not the browser's: a desk
    // PC set to another zone showed "updated 06:57" beside deadlines written 14:57.
    if (updated) updated.textContent = fill(T.updated, {time: new Date().toLocaleTimeString(
      document.documentElement.lang, {timeZone: updated.dataset.tz || undefined, hour12: false})});
    var text = JSON.stringify(data);
    if (text === drawn) { tick(); return; }
    drawn = text;
    var focused = document.activeElement;
    var row = focused && body.contains(focused) ? focused.closest("tr") : null;
    var keep = row ? row.dataset.issue : null;
    var rows = document.createDocumentFragment();
    data.rows.forEach(function (r) {
      var tr = document.createElement("tr");
      tr.dataset.issue = r.issue_id;
      tr.dataset.status = r.status;
      if (r.overdue) tr.className = "overdue";
      var td = document.createElement("td");
      var a = document.createElement("a");
      a.href = "/desk/issues/" + encodeURIComponent(r.issue_id);
      a.textContent = r.issue_id;
      td.appendChild(a);
      tr.appendChild(td);
      cell(tr, r.status_label, "st st-" + r.status);
      // a report held for triage has no priority yet: no "pr-null" class
      cell(tr, r.priority_label, r.priority ? "pr pr-" + r.priority : "pr");
      cell(tr, r.category_label);
      cell(tr, r.community);
      cell(tr, r.lead_label);
      cell(tr, r.level_label, "lv lv-" + r.escalation_level);
      // As the server draws it: the kind (the countdown, by tick) and the moment.
      var dueCell = cell(tr, r.next_deadline ? "" : "—", "due-cell");
      if (r.next_deadline) {
        var due = document.createElement("span");
        due.className = "due";
        due.dataset.due = r.next_deadline;
        due.dataset.kind = r.kind_label;
        due.textContent = r.kind_label;
        var at = document.createElement("time");
        at.className = "due-at";
        at.dateTime = r.next_deadline;
        at.textContent = r.due_at;
        dueCell.append(due, " ", at);
      }
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    if (keep) {
      var again = Array.prototype.find.call(body.querySelectorAll("tr"), function (tr) {
        return tr.dataset.issue === keep;
      });
      if (again) again.querySelector("a").focus();
    }
    var empty = document.getElementById("board-empty");
    if (empty) empty.hidden = data.rows.length > 0;
    var count = document.getElementById("board-count");
    if (count && data.total !== null) {
      count.textContent = fill(T.shown_of, {shown: data.rows.length, total: data.total});
    }
    tick();
  }

  // A live page that cannot reach the server says so (its [data-offline] notice) after
  // a few failed looks in a row, and stops saying so at the next answer: without it a
  // board kept its green dot and ticking countdowns, stale, as if still live.
  var OFFLINE_AFTER = 3;

  function poll(url, every, onData) {
    var busy = false;
    var failed = 0;
    var offline = document.querySelector("[data-offline]");
    function answered(ok) {
      failed = ok ? 0 : failed + 1;
      if (offline) offline.hidden = failed < OFFLINE_AFTER;
      if (offline && offline.parentElement) {
        offline.parentElement.classList.toggle("is-offline", failed >= OFFLINE_AFTER);
      }
    }
    function once() {
      if (busy || document.hidden) return;
      busy = true;
      fetch(url(), {credentials: "same-origin", headers: {Accept: "application/json"}})
        .then(function (r) {
          if (r.status === 401 || r.redirected) { window.location = "/signin"; return null; }
          answered(r.ok || r.status === 304);
          return r.ok ? r.json() : null;
        })
        .then(function (data) { if (data) onData(data); })
        .catch(function () { answered(false); })
        .then(function () { busy = false; });
    }
    once();
    setInterval(once, every);
  }

  var board = document.getElementById("board");
  if (board) {
    var body = document.getElementById("board-rows");
    poll(function () { return board.dataset.source; }, 1000,
         function (data) { drawBoard(body, data); });
  }

  var flow = document.getElementById("flow");
  if (flow) {
    var flowBody = document.getElementById("flow-rows");
    var last = 0;
    flowBody.querySelectorAll("tr[data-seq]").forEach(function (tr) {
      last = Math.max(last, Number(tr.dataset.seq));
    });
    poll(function () { return flow.dataset.source + "?after=" + last; }, 1000, function (data) {
      data.lines.forEach(function (l) {
        var tr = document.createElement("tr");
        tr.dataset.seq = l.seq;
        [l.clock, l.service || "-", l.type, l.issue || "-", l.agency || "-",
         l.since_received_s === null || l.since_received_s === undefined ? ""
           : "+" + l.since_received_s.toFixed(3) + "s"].forEach(function (text) {
          cell(tr, text);
        });
        flowBody.insertBefore(tr, flowBody.firstChild);
        last = Math.max(last, l.seq);
      });
      while (flowBody.children.length > 300) flowBody.removeChild(flowBody.lastChild);
    });
  }

  // The new-issue form's draft, kept in this tab while it is typed: a session that
  // expired, or a form from before signing in again, would otherwise lose what the
  // resident said. sessionStorage is this tab's alone and goes when the tab closes;
  // the draft goes too when the report is accepted, discarded, or the desk signs out.
  var DRAFT = "whistle.new-issue.draft";

  function readDraft() {
    try { return JSON.parse(window.sessionStorage.getItem(DRAFT) || "null"); }
    catch (e) { return null; }
  }

  function forgetDraft() {
    try { window.sessionStorage.removeItem(DRAFT); } catch (e) { /* storage off */ }
  }

  var newIssue = document.getElementById("new-issue");
  if (newIssue) {
    var kept = Array.prototype.filter.call(newIssue.elements, function (el) {
      return el.name && el.type !== "hidden" && el.type !== "submit";
    });
    var blank = kept.every(function (el) { return el.tagName === "SELECT" || !el.value; });
    var draft = readDraft();
    var restored = document.getElementById("draft-restored");
    // Only into a blank form: one the server sent back with errors holds what was sent.
    if (blank && draft && draft.description) {
      kept.forEach(function (el) {
        if (draft[el.name] !== undefined) el.value = draft[el.name];
      });
      if (restored) restored.hidden = false;
    }
    var save = function () {
      var values = {};
      kept.forEach(function (el) { values[el.name] = el.value; });
      try { window.sessionStorage.setItem(DRAFT, JSON.stringify(values)); }
      catch (e) { /* storage full or off: the form still works */ }
    };
    newIssue.addEventListener("input", save);
    newIssue.addEventListener("change", save);
    var discard = document.getElementById("draft-discard");
    if (discard) {
      discard.addEventListener("click", function () {
        forgetDraft();
        newIssue.reset();
        kept.forEach(function (el) { if (el.tagName !== "SELECT") el.value = ""; });
        if (restored) restored.hidden = true;
      });
    }
  }
  if (/[?&]done=submitted(&|$)/.test(window.location.search)) forgetDraft();

  // An agency's notes (报到, resolution, a table task's) are kept the same way, each by
  // its field's id: typed on a phone, then the session expired, they were lost. A note
  // comes back into its blank field after signing in again; it goes when its form was
  // accepted (?done=1), when its assignment is no longer on the page, or at sign-out.
  var NOTES = "whistle.agency.notes";
  var SENT = "whistle.agency.notes.sent";

  function stored(key) {
    try { return JSON.parse(window.sessionStorage.getItem(key) || "null"); }
    catch (e) { return null; }
  }

  function store(key, value) {
    try { window.sessionStorage.setItem(key, JSON.stringify(value)); }
    catch (e) { /* storage full or off: the form still works */ }
  }

  function forgetNotes() {
    try { window.sessionStorage.removeItem(NOTES); window.sessionStorage.removeItem(SENT); }
    catch (e) { /* storage off */ }
  }

  var keptForms = document.querySelectorAll("form[data-keep]");
  if (keptForms.length) {
    var notes = stored(NOTES) || {};
    if (/[?&]done=1(&|$)/.test(window.location.search)) {
      (stored(SENT) || []).forEach(function (id) { delete notes[id]; });
    }
    var fields = {};
    keptForms.forEach(function (form) {
      Array.prototype.forEach.call(form.elements, function (el) {
        if (el.id && el.name && el.type !== "hidden" && el.type !== "submit") fields[el.id] = el;
      });
    });
    var brought = false;
    Object.keys(notes).forEach(function (id) {
      var el = fields[id];
      if (!el) { delete notes[id]; return; }  // that assignment is done, or gone
      if (!el.value && notes[id]) { el.value = notes[id]; brought = true; }
    });
    store(NOTES, notes);
    try { window.sessionStorage.removeItem(SENT); } catch (e) { /* storage off */ }
    var broughtNotice = document.getElementById("notes-restored");
    if (brought && broughtNotice) broughtNotice.hidden = false;
    keptForms.forEach(function (form) {
      form.addEventListener("input", function (event) {
        var el = event.target;
        if (!fields[el.id]) return;
        var now = stored(NOTES) || {};
        if (el.value.trim()) now[el.id] = el.value; else delete now[el.id];
        store(NOTES, now);
      });
      form.addEventListener("submit", function () {
        var ids = Array.prototype.filter.call(form.elements, function (el) {
          return fields[el.id];
        }).map(function (el) { return el.id; });
        store(SENT, (stored(SENT) || []).concat(ids));
      });
    });
  }

  document.querySelectorAll("form[action='/signout']").forEach(function (form) {
    form.addEventListener("submit", forgetDraft);
    form.addEventListener("submit", forgetNotes);
  });
  var waiting = document.getElementById("draft-waiting");
  if (waiting && !newIssue) {
    var left = readDraft();
    waiting.hidden = !(left && left.description);
  }

  // A form is sent once: a second click or tap while the first send is on its way (a
  // slow line) is ignored. Both used to reach the server, and the page showed the
  // second's answer: a resident's rating "already rated" (not "reopened"), an agency's
  // 报到 "already reported in". After 10 s, or back on the page, it can be sent again.
  document.querySelectorAll("form[method=post]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      var sent = Number(form.dataset.sentAt || 0);
      if (sent && Date.now() - sent < 10000) { event.preventDefault(); return; }
      form.dataset.sentAt = String(Date.now());
    });
  });
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    document.querySelectorAll("form[data-sent-at]").forEach(function (form) {
      delete form.dataset.sentAt;
    });
  });

  tick();
  setInterval(tick, 1000);
})();
