// outlast ui: place the waterfall bars, confirm and send actions, refresh open pages (and
// their action forms when the run's actions change).
// Plain script, no build step. Everything shown comes from server-rendered, escaped HTML.
"use strict";
(function () {
  var body = document.body;
  var flash = document.getElementById("flash");

  function placeBars(root) {
    root.querySelectorAll(".bar").forEach(function (bar) {
      bar.style.left = bar.getAttribute("data-left") + "%";
      bar.style.width = bar.getAttribute("data-width") + "%";
    });
  }

  function say(text, bad) {
    flash.textContent = text;
    flash.className = bad ? "bad" : "good";
  }

  // The action forms sit outside #live, so a refresh never clears what is being typed: they
  // are replaced only when the run's set of actions changed (a retried run loses "Retry run",
  // an ended run its event form); otherwise only the event name the run now waits for is
  // brought up to date, unless someone edited it.
  function refreshActions(doc) {
    var actions = document.getElementById("actions");
    var fresh = doc.getElementById("actions");
    if (!actions || !fresh) return;
    if (actions.getAttribute("data-actions") !== fresh.getAttribute("data-actions")) {
      actions.replaceWith(fresh);
      return;
    }
    var name = actions.querySelector("#ev-name");
    var wanted = fresh.querySelector("#ev-name");
    if (name && wanted && document.activeElement !== name && name.value === name.defaultValue) {
      name.defaultValue = wanted.defaultValue;
      name.value = wanted.defaultValue;
    }
  }

  // Replace #live with the same part of a fresh copy of this page, keeping open steps open.
  function refresh() {
    var live = document.getElementById("live");
    if (!live) return Promise.resolve();
    return fetch(location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("live");
        if (!fresh) return;
        var open = {};
        live.querySelectorAll("details[open]").forEach(function (d) { if (d.id) open[d.id] = true; });
        fresh.querySelectorAll("details").forEach(function (d) {
          if (d.id) d.open = !!open[d.id];
        });
        live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes));
        placeBars(live);
        refreshActions(doc);
      });
  }

  // Delegated: forms inside #live (fork buttons) are replaced by refreshes.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("action")) return;
    event.preventDefault();
    if (!window.confirm(form.getAttribute("data-confirm") || "Are you sure?")) return;
    fetch(form.getAttribute("action"), {
      method: "POST",
      body: new URLSearchParams(new FormData(form)),
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    })
      .then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); })
      .then(function (res) {
        say(res[0] ? res[1].message : "Refused: " + res[1].error, !res[0]);
        return refresh();
      })
      .catch(function (err) { say("Failed: " + err, true); });
  });

  placeBars(document);

  // Live updates: the run page polls a one-row state and refreshes when it differs from what
  // the page shows (or while the run is running); the first page of runs refreshes every 5 s.
  var mode = body.getAttribute("data-live");
  var stateUrl = body.getAttribute("data-state");
  function shown() {
    var h = document.querySelector("#live [data-epoch]");
    return h ? h.getAttribute("data-status") + ":" + h.getAttribute("data-epoch") : null;
  }
  function poll() {
    if (document.hidden) return;
    if (mode === "runs") { refresh(); return; }
    fetch(stateUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (state) {
        if (state === null) return;
        if (state.status === "running" || state.status + ":" + state.epoch !== shown()) refresh();
      });
  }
  if (mode === "run" && stateUrl) setInterval(poll, 1000);
  if (mode === "runs") setInterval(poll, 5000);
})();
