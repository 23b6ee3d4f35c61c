// The theme: the system's (light or dark, through CSS color-scheme) unless the reader chose one with the
// header's toggle, kept in localStorage. Loaded without defer so that the choice applies before drawing.
(function () {
  "use strict";
  var KEY = "cxr-theme";
  var root = document.documentElement;
  var system = window.matchMedia("(prefers-color-scheme: dark)");

  function stored() {
    try { return window.localStorage.getItem(KEY); } catch (error) { return null; }  // storage may be off
  }

  var chosen = stored();
  if (chosen === "dark" || chosen === "light") { root.setAttribute("data-theme", chosen); }

  function isDark() {
    var theme = root.getAttribute("data-theme");
    return theme ? theme === "dark" : system.matches;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var button = document.querySelector("[data-theme-toggle]");
    if (!button) { return; }
    function show() { button.setAttribute("aria-pressed", String(isDark())); }
    button.addEventListener("click", function () {
      var next = isDark() ? "light" : "dark";
      root.setAttribute("data-theme", next);
      try { window.localStorage.setItem(KEY, next); } catch (error) { /* kept for this page only */ }
      show();
    });
    system.addEventListener("change", show);
    show();
    button.hidden = false;
  });
})();
