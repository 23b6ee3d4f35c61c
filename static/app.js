// Progressive enhancement only: every page works without this file (no inline scripts anywhere).
(function () {
  "use strict";

  // Upload page: drag-and-drop onto the drop zone, and a list of the chosen files.
  document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
    var input = zone.querySelector("input[type=file]");
    var list = zone.querySelector("[data-chosen]");
    if (!input || !list) { return; }
    function showChosen() {
      list.textContent = "";
      Array.prototype.forEach.call(input.files, function (file) {
        var item = document.createElement("li");
        item.textContent = file.name + " (" + Math.max(1, Math.round(file.size / 1024)) + " KB)";
        list.appendChild(item);
      });
    }
    input.addEventListener("change", showChosen);
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    });
    ["dragleave", "dragend"].forEach(function (type) {
      zone.addEventListener(type, function () { zone.classList.remove("dragging"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("dragging");
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        showChosen();
      }
    });
  });

  // Result page: the Grad-CAM overlay's opacity follows its slider.
  document.querySelectorAll("input[data-opacity-target]").forEach(function (slider) {
    var target = document.getElementById(slider.getAttribute("data-opacity-target"));
    if (!target) { return; }
    function apply() { target.style.opacity = String(slider.value / 100); }
    slider.addEventListener("input", apply);
    apply();
  });
})();
