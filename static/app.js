// Progressive enhancement only: every page works without this file (no inline scripts anywhere).
(function () {
  "use strict";

  // Back to the upload page from a result written into it (above): load the upload page afresh.
  window.addEventListener("popstate", function (event) {
    if (event.state && event.state.reloadOnReturn) { window.location.reload(); }
  });

  // A form sent back with errors (the review form): move focus to its error summary, which scrolls it into
  // view and has screen readers read it out (it is also role=alert). Once the page's images have loaded,
  // it is scrolled back into view in case the film viewer above it changed the page's height meanwhile.
  var problem = document.querySelector("[data-focus-on-load]");
  if (problem) {
    problem.focus();
    window.addEventListener("load", function () {
      if (document.activeElement === problem) { problem.scrollIntoView({ block: "center" }); }
    });
  }

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

  // Timestamps are rendered in UTC (<time datetime="...Z">); show them in the reader's time zone,
  // keeping the UTC text as the tooltip.
  function pad(number) { return String(number).padStart(2, "0"); }
  function zoneName(date) {
    var part = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" }).formatToParts(date)
      .find(function (item) { return item.type === "timeZoneName"; });
    return part ? part.value : "";
  }
  document.querySelectorAll("time[data-local]").forEach(function (element) {
    var when = new Date(element.getAttribute("datetime"));
    if (isNaN(when.getTime())) { return; }
    element.title = element.textContent;
    element.textContent = when.getFullYear() + "-" + pad(when.getMonth() + 1) + "-" + pad(when.getDate()) + " " +
      pad(when.getHours()) + ":" + pad(when.getMinutes()) + " " + zoneName(when);
  });

  // Upload page: send the form with XMLHttpRequest to show the upload's progress. The answer is still the
  // server's Post/Redirect/Get: the request follows the redirect, and its page (the result, or the upload
  // page with its messages) replaces this one. When it was redirected, the result gets a history entry of
  // its own at its address, so that reloading it asks for the result again and never sends the upload
  // twice, and Back returns to the upload page, which is then loaded afresh (below).
  document.querySelectorAll("form[data-upload]").forEach(function (form) {
    var box = form.querySelector("[data-progress]");
    var submit = form.querySelector("[type=submit]");
    if (!box || !submit) { return; }
    var bar = box.querySelector("progress");
    var text = box.querySelector("[data-progress-text]");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.upload.addEventListener("progress", function (progress) {
        if (!progress.lengthComputable) { return; }
        var percent = Math.round((progress.loaded / progress.total) * 100);
        bar.value = percent;
        text.textContent = "Uploading: " + percent + " %";
      });
      request.upload.addEventListener("load", function () {
        bar.removeAttribute("value");  // indeterminate while the server analyses
        text.textContent = "Uploaded; analysing…";
      });
      request.addEventListener("load", function () {
        var address = request.responseURL;
        var redirected = address && address !== form.action;
        if (redirected) { window.history.replaceState({ reloadOnReturn: true }, ""); }
        document.open();
        document.write(request.responseText);
        document.close();
        if (redirected) { window.history.pushState(null, "", address); }
      });
      request.addEventListener("error", function () {
        text.textContent = "The upload did not reach the server. Check the connection and send it again.";
        submit.disabled = false;
      });
      submit.disabled = true;
      box.hidden = false;
      bar.value = 0;
      text.textContent = "Uploading: 0 %";
      request.send(new FormData(form));
    });
  });

  // On a phone, the worklist's filters start folded away, so that the list itself is in view.
  if (window.matchMedia("(max-width: 600px)").matches) {
    document.querySelectorAll("details[data-fold-on-phone]").forEach(function (box) { box.open = false; });
  }

  // Account page: copy a new API token to the clipboard.
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    var status = document.getElementById(button.getAttribute("aria-describedby"));
    if (!source || !status) { return; }
    function selectSource() {
      var range = document.createRange();
      range.selectNodeContents(source);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    function copied() { status.textContent = "Copied."; }
    function manually() {
      selectSource();
      status.textContent = "Selected: copy it with Ctrl+C (⌘C).";
    }
    button.addEventListener("click", function () {
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(source.textContent).then(copied, manually);
      } else {
        manually();
      }
    });
    button.hidden = false;
  });
})();
