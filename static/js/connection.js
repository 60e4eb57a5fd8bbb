// Connection page: the webhook URL's copy button (shown only where the clipboard API exists;
// without it the URL stays selectable in its read-only field).
(function () {
  "use strict";
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.dataset.copy);
    var done = button.parentNode.querySelector("[data-copied]");
    if (!field || !navigator.clipboard) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(field.value).then(function () {
        if (done) done.hidden = false;
      }, function () {
        field.select();
      });
    });
  });
  document.querySelectorAll("[data-copy-source]").forEach(function (field) {
    field.addEventListener("focus", function () { field.select(); });
  });
})();
