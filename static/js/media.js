// Media library: drag-and-drop multi-file upload to /api/chat/upload-media/ with a progress
// bar per file; each finished upload inserts its card, which then updates live (live.js).
(function () {
  "use strict";
  var zone = document.getElementById("dropzone");
  if (!zone) return;
  var input = document.getElementById("file-input");
  var list = document.getElementById("upload-list");
  var csrf = (document.querySelector("[name=csrfmiddlewaretoken]") || {}).value ||
    (document.cookie.match(/(?:^|; )csrftoken=([^;]+)/) || [])[1] || "";

  function upload(file) {
    var item = document.createElement("li");
    item.className = "upload";
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name;
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    var state = document.createElement("span");
    state.className = "state small";
    item.append(name, bar, state);
    list.prepend(item);

    var form = new FormData();
    form.append("file", file);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", zone.dataset.uploadUrl);
    xhr.setRequestHeader("X-CSRFToken", csrf);
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
    };
    xhr.onload = function () {
      var body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 201 && body.success) {
        bar.value = 100;
        item.classList.add("done");
        state.textContent = "✓";
        insertCard(body.id);
      } else {
        item.classList.add("failed");
        state.textContent = body.error || ("HTTP " + xhr.status);
      }
    };
    xhr.onerror = function () {
      item.classList.add("failed");
      state.textContent = "network error";
    };
    xhr.send(form);
  }

  function insertCard(id) {
    var grid = document.querySelector("#media-grid .grid");
    if (!grid || !window.htmx) return;
    var empty = grid.querySelector(".empty");
    if (empty) empty.remove();
    var slot = document.createElement("figure");
    slot.dataset.asset = id;
    grid.prepend(slot);
    var url = "/media/" + id + "/card/";
    window.htmx.ajax("GET", url, { target: slot, swap: "outerHTML" }).then(function () {
      // The thumbnail may have been made while the card was loading (live.js marks it).
      var card = grid.querySelector('[data-asset="' + id + '"]');
      if (slot.dataset.changed && card) window.htmx.ajax("GET", url, { target: card, swap: "outerHTML" });
    });
  }

  function files(list) { Array.prototype.forEach.call(list, upload); }

  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (e) { files(e.dataTransfer.files); });
  input.addEventListener("change", function () { files(input.files); input.value = ""; });
})();
