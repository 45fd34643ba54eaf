// Regard console: small enhancements only; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // <element data-refresh="5">: reload the page every N seconds while it is visible
  // (a running video job's progress). Stops as soon as the element is gone.
  var refresh = document.querySelector("[data-refresh]");
  if (refresh) {
    var seconds = Math.max(2, parseInt(refresh.getAttribute("data-refresh"), 10) || 5);
    setInterval(function () {
      if (document.visibilityState === "visible") { window.location.reload(); }
    }, seconds * 1000);
  }
  // <button data-copy="ID">: copy the text of element ID (a new key's secret).
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (source && navigator.clipboard) {
        navigator.clipboard.writeText(source.textContent.trim()).then(function () {
          button.textContent = "Copied";
        });
      }
    });
  });
});
