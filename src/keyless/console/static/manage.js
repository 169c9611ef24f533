// Manage (/manage): the trust policy preview follows the form as the user types.
// The form works without this file: its "Preview" button renders the page with the preview.
(function () {
  "use strict";
  var form = document.getElementById("policy-form");
  var out = document.getElementById("preview");
  if (!form || !out || !window.fetch) { return; }
  var timer = null;
  var latest = 0;

  function update() {
    var mine = ++latest;
    var data = new URLSearchParams(new FormData(form));
    data.set("action", "preview");
    out.setAttribute("aria-busy", "true");
    fetch("/manage/preview", {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "Accept": "text/html" }
    }).then(function (response) {
      return response.text().then(function (html) {
        if (mine !== latest) { return; }
        if (response.ok) {
          out.innerHTML = html;
        } else {
          out.textContent = "Preview unavailable (HTTP " + response.status + "): reload the page.";
        }
      });
    }).catch(function (error) {
      if (mine === latest) { out.textContent = "Preview unavailable: " + error.message; }
    }).then(function () {
      if (mine === latest) { out.removeAttribute("aria-busy"); }
    });
  }

  function soon() {
    clearTimeout(timer);
    timer = setTimeout(update, 250);
  }

  form.addEventListener("input", soon);
  form.addEventListener("change", soon);
  if (form.elements.subject && form.elements.subject.value) { update(); }
})();
