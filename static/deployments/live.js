/* Pages that reload themselves while something on them is still changing (docs/fleet.md, "Server
   health"): a server that is not up, a replica loading or unloading. The page says so in #sv-live; it
   stops reloading once the reader types, ticks a row or picks an action, so nothing they do is lost. */
(function () {
  "use strict";
  const note = document.getElementById("sv-live");
  if (!note) return;
  const seconds = Number(note.dataset.refreshSeconds || 5);
  let touched = false;
  const touch = function () { touched = true; };
  document.addEventListener("input", touch, true);
  document.addEventListener("change", touch, true);
  window.setInterval(function () {
    if (!touched && !document.hidden) window.location.reload();
  }, seconds * 1000);
})();
