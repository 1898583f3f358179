// cellbench serve: upload an image, show the overlay and the count, download each format.
// Plain JavaScript, no libraries: the page works without a network beyond this server.
"use strict";
(function () {
  const input = document.getElementById("file");
  const drop = document.getElementById("drop");
  const status = document.getElementById("status");
  const result = document.getElementById("result");
  const count = document.getElementById("count");
  const warning = document.getElementById("warning");
  const timing = document.getElementById("timing");
  const overlay = document.getElementById("overlay");
  const buttons = Array.from(document.querySelectorAll("#downloads button"));
  const suffix = { json: ".json", tiff: "_masks.tif", roi: "_rois.zip", geojson: ".geojson", png: "_overlay.png" };
  let current = null;

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  async function post(file, query) {
    const form = new FormData();
    form.append("file", file, file.name);
    const response = await fetch("segment?" + query, { method: "POST", body: form });
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try {
        const body = await response.json();
        if (body && body.detail) {
          message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
        }
      } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    return response;
  }

  function stem(name) {
    const base = (name || "image").replace(/^.*[\\/]/, "");
    return base.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9._-]+/g, "_") || "image";
  }

  async function segment(file) {
    current = file;
    result.hidden = true;
    say("Segmenting " + file.name + " (" + (file.size / 1048576).toFixed(1) + " MiB) ...");
    const t0 = performance.now();
    try {
      const body = await (await post(file, "format=json&overlay=true")).json();
      overlay.src = body.overlay_png;
      const n = body.n_objects;
      count.textContent = n + (n === 1 ? " object" : " objects") + " found";
      count.dataset.count = String(n);
      warning.hidden = !body.warning;
      warning.textContent = body.warning || "";
      const seconds = ((performance.now() - t0) / 1000).toFixed(1);
      timing.textContent = body.image.width + " x " + body.image.height + " px, " + body.image.dtype +
        "; segmented in " + body.timings.segment_s.toFixed(2) + " s (" + seconds + " s in all)";
      result.hidden = false;
      say("Done: " + file.name);
    } catch (error) {
      say("Could not segment " + file.name + ": " + error.message, true);
    }
  }

  async function download(format, button) {
    if (!current) { return; }
    button.disabled = true;
    try {
      const response = await post(current, "format=" + format);
      const blob = await response.blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = stem(current.name) + suffix[format];
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(function () { URL.revokeObjectURL(link.href); }, 10000);
    } catch (error) {
      say("Download failed: " + error.message, true);
    } finally {
      button.disabled = false;
    }
  }

  input.addEventListener("change", function () {
    if (input.files && input.files.length) { segment(input.files[0]); }
  });
  ["dragenter", "dragover"].forEach(function (name) {
    drop.addEventListener(name, function (event) { event.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    drop.addEventListener(name, function (event) { event.preventDefault(); drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (event) {
    const files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) { segment(files[0]); }
  });
  drop.addEventListener("keydown", function (event) {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  buttons.forEach(function (button) {
    button.addEventListener("click", function () { download(button.dataset.format, button); });
  });
})();
