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
  // <ol data-events="URL">: a stream processor's records as they arrive (Server-Sent Events),
  // newest first, at most 50; built with textContent only (record values are never markup).
  var list = document.querySelector("[data-events]");
  if (list && window.EventSource) {
    var source = new EventSource(list.getAttribute("data-events"));
    source.addEventListener("record", function (event) {
      var record;
      try { record = JSON.parse(event.data); } catch (e) { return; }
      var info = ((record.InputInformation || {}).KinesisVideo || {});
      var faces = record.FaceSearchResponse || [];
      var names = faces.map(function (face) {
        var match = (face.MatchedFaces || [])[0];
        if (!match) { return "unknown face"; }
        var who = match.Face.ExternalImageId || match.Face.FaceId;
        return who + " (" + match.Similarity.toFixed(1) + "%)";
      });
      var item = document.createElement("li");
      var when = new Date((info.ServerTimestamp || 0) * 1000);
      item.textContent = when.toLocaleTimeString() + ": " + names.join(", ");
      list.insertBefore(item, list.firstChild);
      while (list.children.length > 50) { list.removeChild(list.lastChild); }
    });
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
