// keygate console: the one script (docs/console.md). No inline code anywhere; this file
// only enhances pages that work without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Dates: the markup holds UTC (also in the tooltip); show the viewer's locale.
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d.getTime())) {
      t.textContent = d.toLocaleString();
    }
  });
  // Copy buttons: <button data-copy="ID"> copies the text of element ID.
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    b.hidden = false;
    b.addEventListener("click", function () {
      var el = document.getElementById(b.getAttribute("data-copy"));
      if (!el || !navigator.clipboard) {
        return;
      }
      navigator.clipboard.writeText(el.textContent.trim()).then(function () {
        b.textContent = "Copied";
      }, function () {
        b.textContent = "Copy failed: select the text";
      });
    });
  });
});
