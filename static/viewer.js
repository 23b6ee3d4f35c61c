// The film viewer: the stored film at full resolution on a canvas, with zoom and pan (wheel, pinch, drag,
// keyboard), window level/width and invert (a look-up table over the 8-bit film), and the Grad-CAM heatmap
// as its own layer with an opacity. Progressive enhancement: the page shows the plain images until the
// film has loaded here, and keeps them if it cannot.
(function () {
  "use strict";

  var ZOOM_STEP = 1.25;
  var MAX_SCALE = 16;          // film pixels drawn 16 screen pixels wide at most
  var PAN_STEP = 60;           // screen pixels per arrow key
  var WINDOW_STEP = 8;         // grey levels per key press
  // JPEG noise in the stored overlay: differences from the film up to this are not heatmap.
  var OVERLAY_NOISE = 6;

  function clamp(value, low, high) { return Math.min(high, Math.max(low, value)); }

  function loadImage(src) {
    return new Promise(function (resolve, reject) {
      var image = new Image();
      image.onload = function () { resolve(image); };
      image.onerror = function () { reject(new Error("could not load " + src)); };
      image.src = src;
    });
  }

  function pixels(image, width, height) {
    var canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    var context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(image, 0, 0, width, height);
    return context.getImageData(0, 0, width, height).data;
  }

  // The stored overlay is the film blended with the colour map: overlay = film + a · (colour − film).
  // Taking for each pixel the smallest a that keeps the colour within 0-255 gives back the heatmap's own
  // colour and weight (the 'jet' colours reach 0 or 255 in some channel), so the layer can be drawn
  // over the film however it is windowed.
  function heatLayer(overlay, film, canvas) {
    var width = overlay.naturalWidth, height = overlay.naturalHeight;
    var blended = pixels(overlay, width, height);
    var base = pixels(film, width, height);
    canvas.width = width;
    canvas.height = height;
    var context = canvas.getContext("2d");
    var layer = context.createImageData(width, height);
    var out = layer.data;
    for (var i = 0; i < out.length; i += 4) {
      var gray = base[i];
      var alpha = 0;
      var delta = [0, 0, 0];
      for (var c = 0; c < 3; c++) {
        var d = blended[i + c] - gray;
        d = d > 0 ? Math.max(0, d - OVERLAY_NOISE) : Math.min(0, d + OVERLAY_NOISE);
        delta[c] = d;
        if (d > 0) { alpha = Math.max(alpha, d / Math.max(1, 255 - gray)); }
        if (d < 0) { alpha = Math.max(alpha, -d / Math.max(1, gray)); }
      }
      if (alpha > 0) {
        alpha = Math.min(1, alpha);
        for (c = 0; c < 3; c++) { out[i + c] = gray + delta[c] / alpha; }
        out[i + 3] = Math.round(alpha * 255);
      }
    }
    context.putImageData(layer, 0, 0);
  }

  function Viewer(root) {
    this.root = root;
    this.viewport = root.querySelector("[data-viewport]");
    this.stage = root.querySelector("[data-stage]");
    this.canvas = root.querySelector("[data-film-canvas]");
    this.heat = root.querySelector("[data-heat-canvas]");
    this.status = root.querySelector("[data-status]");
    this.controls = {};
    var self = this;
    root.querySelectorAll("[data-control]").forEach(function (input) {
      self.controls[input.getAttribute("data-control")] = input;
    });
    this.scale = 1;
    this.x = 0;
    this.y = 0;
    this.fitted = true;
    this.pointers = new Map();
  }

  Viewer.prototype.start = function () {
    var self = this;
    var root = this.root;
    loadImage(root.getAttribute("data-film")).then(function (film) {
      self.width = film.naturalWidth;
      self.height = film.naturalHeight;
      self.canvas.width = self.width;
      self.canvas.height = self.height;
      self.stage.style.width = self.width + "px";
      self.stage.style.height = self.height + "px";
      var rgba = pixels(film, self.width, self.height);
      self.film = new Uint8ClampedArray(self.width * self.height);  // one grey value per pixel
      for (var i = 0; i < self.film.length; i++) { self.film[i] = rgba[i * 4]; }
      self.context = self.canvas.getContext("2d", { willReadFrequently: true });
      self.shown = self.context.createImageData(self.width, self.height);
      root.hidden = false;
      var section = root.closest("[data-viewer-section]");
      if (section) { section.classList.add("viewer-on"); }  // the plain images give way to the viewer
      document.querySelectorAll("[data-viewer-only]").forEach(function (element) { element.hidden = false; });
      self.bind();
      self.draw();
      self.fit();
      return loadImage(root.getAttribute("data-overlay")).then(function (overlay) {
        heatLayer(overlay, film, self.heat);
        self.showHeat();
        root.setAttribute("data-ready", "");
      });
    }).catch(function () {
      if (self.status) { self.status.textContent = "The viewer could not load this film; the images below show it."; }
    });
  };

  // Window level/width and invert, applied through a 256-entry table.
  Viewer.prototype.draw = function () {
    var level = Number(this.controls.level.value);
    var width = Math.max(1, Number(this.controls.width.value));
    var invert = this.controls.invert.checked;
    var table = new Uint8ClampedArray(256);
    for (var v = 0; v < 256; v++) {
      var shown = clamp(Math.round(((v - (level - width / 2)) / width) * 255), 0, 255);
      table[v] = invert ? 255 - shown : shown;
    }
    var out = this.shown.data;
    var film = this.film;
    for (var i = 0, j = 0; j < film.length; i += 4, j++) {
      var value = table[film[j]];
      out[i] = value;
      out[i + 1] = value;
      out[i + 2] = value;
      out[i + 3] = 255;
    }
    this.context.putImageData(this.shown, 0, 0);
    this.root.setAttribute("data-window", level + "/" + width + (invert ? "/inverted" : ""));
    this.report();
  };

  Viewer.prototype.showHeat = function () {
    this.heat.hidden = !this.controls.overlay.checked;
    this.heat.style.opacity = String(Number(this.controls.opacity.value) / 100);
  };

  Viewer.prototype.place = function () {
    this.stage.style.transform = "translate(" + this.x + "px, " + this.y + "px) scale(" + this.scale + ")";
    this.root.setAttribute("data-scale", this.scale.toFixed(4));
    this.report();
  };

  Viewer.prototype.report = function () {
    if (!this.status) { return; }
    this.status.textContent = "Zoom " + Math.round(this.scale * 100) + " % · window level " +
      this.controls.level.value + ", width " + this.controls.width.value +
      (this.controls.invert.checked ? " · inverted" : "");
  };

  Viewer.prototype.fitScale = function () {
    return Math.min(this.viewport.clientWidth / this.width, this.viewport.clientHeight / this.height);
  };

  Viewer.prototype.fit = function () {
    this.scale = this.fitScale();
    this.x = (this.viewport.clientWidth - this.width * this.scale) / 2;
    this.y = (this.viewport.clientHeight - this.height * this.scale) / 2;
    this.fitted = true;
    this.place();
  };

  Viewer.prototype.actualSize = function () {
    this.zoomTo(1, this.viewport.clientWidth / 2, this.viewport.clientHeight / 2);
  };

  // Zoom to `scale` keeping the film point under (cx, cy), in viewport pixels, where it is.
  Viewer.prototype.zoomTo = function (scale, cx, cy) {
    var next = clamp(scale, Math.min(1, this.fitScale()) / 2, MAX_SCALE);
    this.x = cx - (cx - this.x) * (next / this.scale);
    this.y = cy - (cy - this.y) * (next / this.scale);
    this.scale = next;
    this.fitted = false;
    this.place();
  };

  Viewer.prototype.zoomBy = function (factor, cx, cy) {
    if (cx === undefined) {
      cx = this.viewport.clientWidth / 2;
      cy = this.viewport.clientHeight / 2;
    }
    this.zoomTo(this.scale * factor, cx, cy);
  };

  Viewer.prototype.pan = function (dx, dy) {
    this.x += dx;
    this.y += dy;
    this.fitted = false;
    this.place();
  };

  Viewer.prototype.nudgeWindow = function (control, step) {
    var input = this.controls[control];
    input.value = String(clamp(Number(input.value) + step, Number(input.min), Number(input.max)));
    this.draw();
  };

  Viewer.prototype.resetWindow = function () {
    this.controls.level.value = this.controls.level.defaultValue;
    this.controls.width.value = this.controls.width.defaultValue;
    this.controls.invert.checked = false;
    this.draw();
  };

  Viewer.prototype.local = function (event) {
    var box = this.viewport.getBoundingClientRect();
    return { x: event.clientX - box.left, y: event.clientY - box.top };
  };

  Viewer.prototype.bind = function () {
    var self = this;
    var viewport = this.viewport;
    var c = this.controls;
    this.root.querySelectorAll("[data-action]").forEach(function (button) {
      button.addEventListener("click", function () {
        var action = button.getAttribute("data-action");
        if (action === "zoom-in") { self.zoomBy(ZOOM_STEP); }
        if (action === "zoom-out") { self.zoomBy(1 / ZOOM_STEP); }
        if (action === "fit") { self.fit(); }
        if (action === "actual") { self.actualSize(); }
        if (action === "reset-window") { self.resetWindow(); }
      });
    });
    [c.level, c.width, c.invert].forEach(function (input) {
      input.addEventListener("input", function () { self.draw(); });
      input.addEventListener("change", function () { self.draw(); });
    });
    [c.overlay, c.opacity].forEach(function (input) {
      input.addEventListener("input", function () { self.showHeat(); });
      input.addEventListener("change", function () { self.showHeat(); });
    });

    viewport.addEventListener("wheel", function (event) {
      event.preventDefault();
      var at = self.local(event);
      self.zoomBy(Math.exp(-event.deltaY * 0.0015), at.x, at.y);
    }, { passive: false });

    // One pointer pans (with Shift, it sets the window); two pointers pinch to zoom.
    var pinch = null;
    viewport.addEventListener("pointerdown", function (event) {
      viewport.setPointerCapture(event.pointerId);
      self.pointers.set(event.pointerId, self.local(event));
      viewport.classList.add("dragging");
      pinch = null;
    });
    viewport.addEventListener("pointermove", function (event) {
      if (!self.pointers.has(event.pointerId)) { return; }
      var previous = self.pointers.get(event.pointerId);
      var now = self.local(event);
      self.pointers.set(event.pointerId, now);
      if (self.pointers.size === 2) {
        var points = Array.from(self.pointers.values());
        var distance = Math.hypot(points[0].x - points[1].x, points[0].y - points[1].y);
        if (pinch) {
          self.zoomBy(distance / pinch, (points[0].x + points[1].x) / 2, (points[0].y + points[1].y) / 2);
        }
        pinch = distance;
      } else if (event.shiftKey) {
        self.nudgeWindow("width", now.x - previous.x);
        self.nudgeWindow("level", previous.y - now.y);
      } else {
        self.pan(now.x - previous.x, now.y - previous.y);
      }
    });
    ["pointerup", "pointercancel"].forEach(function (type) {
      viewport.addEventListener(type, function (event) {
        self.pointers.delete(event.pointerId);
        pinch = null;
        if (!self.pointers.size) { viewport.classList.remove("dragging"); }
      });
    });
    viewport.addEventListener("dblclick", function () { self.fit(); });

    viewport.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey) { return; }
      var keys = {
        "+": function () { self.zoomBy(ZOOM_STEP); },
        "=": function () { self.zoomBy(ZOOM_STEP); },
        "-": function () { self.zoomBy(1 / ZOOM_STEP); },
        "_": function () { self.zoomBy(1 / ZOOM_STEP); },
        "0": function () { self.fit(); },
        "1": function () { self.actualSize(); },
        "ArrowLeft": function () { self.pan(PAN_STEP, 0); },
        "ArrowRight": function () { self.pan(-PAN_STEP, 0); },
        "ArrowUp": function () { self.pan(0, PAN_STEP); },
        "ArrowDown": function () { self.pan(0, -PAN_STEP); },
        ",": function () { self.nudgeWindow("level", -WINDOW_STEP); },
        ".": function () { self.nudgeWindow("level", WINDOW_STEP); },
        "[": function () { self.nudgeWindow("width", -WINDOW_STEP); },
        "]": function () { self.nudgeWindow("width", WINDOW_STEP); },
        "i": function () { c.invert.checked = !c.invert.checked; self.draw(); },
        "o": function () { c.overlay.checked = !c.overlay.checked; self.showHeat(); },
        "r": function () { self.resetWindow(); }
      };
      var action = keys[event.key];
      if (action) {
        event.preventDefault();
        action();
      }
    });

    window.addEventListener("resize", function () {
      if (self.fitted) { self.fit(); }
    });
  };

  document.querySelectorAll("[data-viewer]").forEach(function (root) {
    new Viewer(root).start();
  });
})();
