/* A form whose work takes a while (issue 17: "Evaluate now" ran ≈20 s with no sign of it): on the first
   submit its buttons are disabled and read their data-busy-text ("Evaluating…"), and the element named by
   the form's data-busy-note (role=status) is shown; a second submit is dropped, so nothing runs twice.
   Coming back to the page from the browser's history gives the buttons back. */
(function () {
  "use strict";
  document.querySelectorAll("form[data-busy-note]").forEach(function (form) {
    const note = document.getElementById(form.dataset.busyNote);
    const buttons = Array.from(form.querySelectorAll("[type=submit][data-busy-text]"));
    const idle = buttons.map(function (b) { return b.tagName === "INPUT" ? b.value : b.textContent; });
    let busy = false;
    const say = function (b, text) { if (b.tagName === "INPUT") b.value = text; else b.textContent = text; };
    form.addEventListener("submit", function (event) {
      if (busy) { event.preventDefault(); return; }
      busy = true;
      form.setAttribute("aria-busy", "true");
      if (note) note.hidden = false;
      // after this turn: the form's data are taken first (a disabled button would not be sent)
      window.setTimeout(function () {
        buttons.forEach(function (b) { b.disabled = true; say(b, b.dataset.busyText); });
      }, 0);
    });
    window.addEventListener("pageshow", function (event) {
      if (!event.persisted) return;
      busy = false;
      form.removeAttribute("aria-busy");
      if (note) note.hidden = true;
      buttons.forEach(function (b, i) { b.disabled = false; say(b, idle[i]); });
    });
  });
})();
