// The film viewer: the stored film at full resolution on a canvas, with zoom and pan (wheel, pinch, drag,
// keyboard), window level/width and invert (a look-up table over the film's values: a DICOM's full bit
// depth from its 16-bit PNG when there is one, else the 8-bit film), presets for lung, mediastinum and
// bone, and the Grad-CAM heatmap as its own layer with an opacity. Progressive enhancement: the page shows the plain images until the
// film has loaded here, and keeps them if it cannot.
(function () {
  "use strict";

  var ZOOM_STEP = 1.25;
  var MAX_SCALE = 16;          // film pixels drawn 16 screen pixels wide at most
  var PAN_STEP = 60;           // screen pixels per arrow key
  var WINDOW_STEP = 8;         // grey levels of an 8-bit film per key press (scaled to the film's range)
  // Presets as (center, width) fractions of the film's value range in display polarity (bone white):
  // a radiograph's pixel values are detector units, not Hounsfield units, so CT's presets do not apply.
  var PRESETS = {
    lung: [0.3, 0.6],
    mediastinum: [0.6, 0.45],
    bone: [0.8, 0.35]
  };

  // A 16-bit grayscale PNG (cxr.overlay.depth_png) as its values: the browser's own image decoding would
  // give 8 bits, so the chunks are read here and the data inflated with DecompressionStream.
  function decodeDepthPng(buffer) {
    var bytes = new Uint8Array(buffer);
    var view = new DataView(buffer);
    var offset = 8, width = 0, height = 0, parts = [];
    while (offset + 8 <= bytes.length) {
      var length = view.getUint32(offset);
      var type = String.fromCharCode(bytes[offset + 4], bytes[offset + 5], bytes[offset + 6], bytes[offset + 7]);
      if (type === "IHDR") {
        width = view.getUint32(offset + 8);
        height = view.getUint32(offset + 12);
        if (bytes[offset + 16] !== 16 || bytes[offset + 17] !== 0 || bytes[offset + 20] !== 0) {
          return Promise.reject(new Error("not a 16-bit grayscale, non-interlaced PNG"));
        }
      } else if (type === "IDAT") {
        parts.push(bytes.subarray(offset + 8, offset + 8 + length));
      } else if (type === "IEND") {
        break;
      }
      offset += 12 + length;
    }
    var stream = new Blob(parts).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (inflated) {
      return { width: width, height: height, values: unfilter(new Uint8Array(inflated), width, height) };
    });
  }

  // PNG's per-row filters (none, sub, up, average, Paeth) undone, for 2 bytes per pixel.
  function unfilter(data, width, height) {
    var stride = width * 2, bpp = 2;
    var previous = new Uint8Array(stride), row = new Uint8Array(stride);
    var values = new Uint16Array(width * height);
    for (var y = 0; y < height; y++) {
      var start = y * (stride + 1), filter = data[start];
      for (var i = 0; i < stride; i++) {
        var raw = data[start + 1 + i];
        var left = i >= bpp ? row[i - bpp] : 0, up = previous[i], corner = i >= bpp ? previous[i - bpp] : 0;
        var predicted = 0;
        if (filter === 1) { predicted = left; }
        else if (filter === 2) { predicted = up; }
        else if (filter === 3) { predicted = (left + up) >> 1; }
        else if (filter === 4) {
          var estimate = left + up - corner;
          var pa = Math.abs(estimate - left), pb = Math.abs(estimate - up), pc = Math.abs(estimate - corner);
          predicted = pa <= pb && pa <= pc ? left : (pb <= pc ? up : corner);
        }
        row[i] = (raw + predicted) & 255;
      }
      for (var x = 0; x < width; x++) { values[y * width + x] = (row[2 * x] << 8) | row[2 * x + 1]; }
      var swap = previous; previous = row; row = swap;
    }
    return values;
  }
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

  // A prediction stored before heatmaps has an overlay file instead, the film blended with the colour map:
  // overlay = film + a · (colour − film).
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

  // The overlay's own size limit (cxr.overlay.OVERLAY_MAX_SIDE): the heat layer is drawn at the film's size
  // reduced by the smallest integer factor that brings its long side to this, and stretched over the film.
  var HEAT_MAX_SIDE = 1024;

  // The stored heatmap (cxr.overlay.heatmap_png: R the Grad-CAM strength, G the blend weight, both 0-255),
  // scaled to the film with smoothing, then coloured: each pixel's colour is the colour map's entry R
  // (`colormap`: 256 × r, g, b bytes, the page's data-colormap in hex) and its alpha G × `alpha`, the
  // overlay's opacity (the slider's opacity applies on top, as for `heatLayer`).
  function colourHeat(map, colormap, alpha, canvas, filmWidth, filmHeight) {
    var factor = Math.ceil(Math.max(filmWidth, filmHeight) / HEAT_MAX_SIDE);
    var width = Math.max(1, Math.round(filmWidth / factor)), height = Math.max(1, Math.round(filmHeight / factor));
    canvas.width = width;
    canvas.height = height;
    var context = canvas.getContext("2d", { willReadFrequently: true });
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "low";  // bilinear, as the server scales it for the overlay
    context.drawImage(map, 0, 0, width, height);
    var layer = context.getImageData(0, 0, width, height);
    var data = layer.data;
    var table = new Uint8Array(768);
    for (var k = 0; k < 768; k++) { table[k] = parseInt(colormap.substr(2 * k, 2), 16); }
    for (var i = 0; i < data.length; i += 4) {
      var entry = data[i] * 3, weight = data[i + 1];
      data[i] = table[entry];
      data[i + 1] = table[entry + 1];
      data[i + 2] = table[entry + 2];
      data[i + 3] = Math.round(weight * alpha);
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
      return self.loadValues(film);
    }).then(function (film) {
      self.context = self.canvas.getContext("2d", { willReadFrequently: true });
      self.shown = self.context.createImageData(self.width, self.height);
      root.hidden = false;
      self.settle(true);  // the plain images give way to the viewer
      document.querySelectorAll("[data-viewer-only]").forEach(function (element) { element.hidden = false; });
      self.bind();
      self.draw();
      self.fit();
      self.ready = true;
      var heat = root.getAttribute("data-heat");
      var layer = heat ? loadImage(heat).then(function (map) {
        var alpha = Number(root.getAttribute("data-heat-alpha"));
        colourHeat(map, root.getAttribute("data-colormap"), alpha, self.heat, self.width, self.height);
      }) : loadImage(root.getAttribute("data-overlay")).then(function (overlay) {
        heatLayer(overlay, film, self.heat);  // a prediction stored before heatmaps: its stored overlay
      });
      return layer.then(function () {
        self.showHeat();
        root.setAttribute("data-ready", "");
      });
    }).catch(function () {
      self.settle(self.ready);
      if (self.status) { self.status.textContent = "The viewer could not load this film; the images below show it."; }
    });
  };

  // The plain images wait hidden while the viewer loads (_viewer.html): with the viewer on they stay hidden
  // (and shown in print), else they show.
  Viewer.prototype.settle = function (on) {
    var section = this.root.closest("[data-viewer-section]");
    if (!section) { return; }
    if (on) { section.classList.add("viewer-on"); }
    section.querySelectorAll("[data-viewer-pending]").forEach(function (images) {
      images.removeAttribute("data-viewer-pending");
    });
  };

  // The values to window: the DICOM's full depth when the page names its 16-bit PNG (and it decodes),
  // else the 8-bit film's grey values. The level and width controls take the values' range, and the
  // DICOM's own window as their default.
  Viewer.prototype.loadValues = function (film) {
    var self = this;
    var root = this.root;
    function eightBit() {
      var rgba = pixels(film, self.width, self.height);
      self.film = new Uint8ClampedArray(self.width * self.height);  // one grey value per pixel
      for (var i = 0; i < self.film.length; i++) { self.film[i] = rgba[i * 4]; }
      self.maximum = 255;
      return film;
    }
    var depth = root.getAttribute("data-depth");
    if (!depth || typeof DecompressionStream === "undefined") { return Promise.resolve(eightBit()); }
    return fetch(depth, { credentials: "same-origin" }).then(function (response) {
      if (!response.ok) { throw new Error("could not load " + depth); }
      return response.arrayBuffer();
    }).then(decodeDepthPng).then(function (decoded) {
      if (decoded.width !== self.width || decoded.height !== self.height) { throw new Error("size differs"); }
      var maximum = 1;
      for (var i = 0; i < decoded.values.length; i++) { if (decoded.values[i] > maximum) { maximum = decoded.values[i]; } }
      self.film = decoded.values;
      self.maximum = maximum;
      var c = self.controls;
      var center = root.getAttribute("data-window-center"), width = root.getAttribute("data-window-width");
      center = Math.round(center !== null ? Number(center) : maximum / 2);
      width = Math.max(1, Math.round(width !== null ? Number(width) : maximum + 1));
      // The ranges hold the values and the DICOM's window, which may reach beyond them.
      c.level.max = String(Math.max(maximum, center));
      c.width.max = String(Math.max(maximum + 1, width));
      c.level.defaultValue = String(center);
      c.width.defaultValue = String(width);
      c.level.value = c.level.defaultValue;
      c.width.value = c.width.defaultValue;
      root.setAttribute("data-bits", String(Math.ceil(Math.log2(maximum + 1))));
      var status = root.querySelector("[data-depth-status]");
      if (status) { status.textContent = "Full depth: " + root.getAttribute("data-bits") + " bits"; }
      return film;
    }).catch(function () { return eightBit(); });  // the 8-bit film still shows
  };

  // Window level/width and invert, applied through a table with one entry per value.
  Viewer.prototype.draw = function () {
    var level = Number(this.controls.level.value);
    var width = Math.max(1, Number(this.controls.width.value));
    var invert = this.controls.invert.checked;
    var table = new Uint8ClampedArray(this.maximum + 1);
    for (var v = 0; v <= this.maximum; v++) {
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
    this.share();
  };

  Viewer.prototype.showHeat = function () {
    this.heat.hidden = !this.controls.overlay.checked;
    this.heat.style.opacity = String(Number(this.controls.opacity.value) / 100);
  };

  Viewer.prototype.place = function () {
    this.stage.style.transform = "translate(" + this.x + "px, " + this.y + "px) scale(" + this.scale + ")";
    this.root.setAttribute("data-scale", this.scale.toFixed(4));
    this.report();
    this.share();
  };

  // Linked viewers (the compare page): what one shows, in terms that fit films of other sizes and depths —
  // zoom relative to fitting the film, the film point at the viewport's centre as fractions of the film,
  // and the window as fractions of the values' range.
  Viewer.prototype.view = function () {
    var fit = this.fitScale();
    return {
      zoom: this.scale / fit,
      fitted: this.fitted,
      cx: (this.viewport.clientWidth / 2 - this.x) / this.scale / this.width,
      cy: (this.viewport.clientHeight / 2 - this.y) / this.scale / this.height,
      level: Number(this.controls.level.value) / this.maximum,
      width: Number(this.controls.width.value) / this.maximum,
      invert: this.controls.invert.checked
    };
  };

  Viewer.prototype.show = function (view) {
    this.applying = true;  // what it shows now is not shared back
    this.scale = view.zoom * this.fitScale();
    this.x = this.viewport.clientWidth / 2 - view.cx * this.width * this.scale;
    this.y = this.viewport.clientHeight / 2 - view.cy * this.height * this.scale;
    this.fitted = view.fitted;
    this.controls.level.value = String(Math.round(view.level * this.maximum));
    this.controls.width.value = String(Math.max(1, Math.round(view.width * this.maximum)));
    this.controls.invert.checked = view.invert;
    this.place();
    this.draw();
    this.applying = false;
  };

  Viewer.prototype.share = function () {
    var group = this.group;
    if (!group || !group.linked || this.applying || !this.ready) { return; }
    var view = this.view();
    var self = this;
    group.viewers.forEach(function (other) {
      if (other !== self && other.ready) { other.show(view); }
    });
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

  // `step` in grey levels of an 8-bit film; scaled to the values' range.
  Viewer.prototype.nudgeWindow = function (control, step) {
    var input = this.controls[control];
    var scaled = Math.round(step * (this.maximum + 1) / 256) || Math.sign(step);
    input.value = String(clamp(Number(input.value) + scaled, Number(input.min), Number(input.max)));
    this.draw();
  };

  Viewer.prototype.preset = function (name) {
    var fractions = PRESETS[name];
    this.controls.level.value = String(Math.round(fractions[0] * this.maximum));
    this.controls.width.value = String(Math.max(1, Math.round(fractions[1] * this.maximum)));
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
    this.root.querySelectorAll("[data-preset]").forEach(function (button) {
      button.addEventListener("click", function () { self.preset(button.getAttribute("data-preset")); });
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
        "l": function () { self.preset("lung"); },
        "m": function () { self.preset("mediastinum"); },
        "b": function () { self.preset("bone"); },
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

  var viewers = [];
  document.querySelectorAll("[data-viewer]").forEach(function (root) {
    var viewer = new Viewer(root);
    viewers.push(viewer);
    viewer.start();
  });

  // The compare page's toggle links zoom, pan and window across its viewers; turning it on brings the
  // others to what the first shows.
  var link = document.querySelector("[data-link-viewers]");
  if (link && viewers.length > 1) {
    var group = { linked: link.checked, viewers: viewers };
    viewers.forEach(function (viewer) { viewer.group = group; });
    link.addEventListener("change", function () {
      group.linked = link.checked;
      if (link.checked && viewers[0].ready) { viewers[0].share(); }
    });
  }
})();
