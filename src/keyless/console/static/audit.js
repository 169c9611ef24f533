// The audit timeline's live tail: poll /audit/tail for events after the newest one shown and
// put them on top. Without JavaScript the page keeps its "refresh" link instead.
(function () {
  "use strict";
  var PERIOD_MS = 2000;

  function start() {
    var table = document.getElementById("audit-events");
    if (!table || !table.dataset.tail) { return; }
    var body = table.tBodies[0];
    var status = document.getElementById("tail-status");
    var pause = document.getElementById("tail-pause");
    var after = table.dataset.after || "0";
    var paused = false;
    var busy = false;

    function say(text) { if (status) { status.textContent = text; } }

    function poll() {
      if (paused || busy) { return; }
      busy = true;
      var sep = table.dataset.tail.indexOf("?") >= 0 ? "&" : "?";
      fetch(table.dataset.tail + sep + "after=" + encodeURIComponent(after),
            { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (response) {
          return response.json().then(function (data) { return [response.ok, data]; });
        })
        .then(function (pair) {
          var data = pair[1];
          if (!pair[0]) { say("Live tail stopped: " + (data.error || "the console refused")); return; }
          if (data.count > 0) {
            body.insertAdjacentHTML("afterbegin", data.html);
            for (var i = 0; i < data.count && i < body.rows.length; i++) {
              body.rows[i].classList.add("fresh");
            }
            var empty = document.getElementById("no-events");
            if (empty) { empty.hidden = true; }
          }
          if (data.next !== null && data.next !== undefined) { after = String(data.next); }
          table.dataset.after = after;
          say(data.count > 0 ? "Live: " + data.count + " new event(s)." : "Live: watching for new events.");
        })
        .catch(function () { say("Live tail: the console does not answer; retrying."); })
        .then(function () { busy = false; });
    }

    if (pause) {
      pause.hidden = false;
      pause.addEventListener("click", function () {
        paused = !paused;
        pause.setAttribute("aria-pressed", paused ? "true" : "false");
        pause.textContent = paused ? "Resume live tail" : "Pause live tail";
        say(paused ? "Live tail paused." : "Live: watching for new events.");
        if (!paused) { poll(); }
      });
    }
    say("Live: watching for new events.");
    window.setInterval(poll, PERIOD_MS);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
