// Live replies: live.js turns every socket frame into a `sense:<type>` event. On
// {"type": "inbound.message", contact_id, campaign_id, id} the contact page fetches that one
// message (an htmx partial) to the top of its conversation, and a campaign page's Replies
// panel fetches its first page again.
(function () {
  "use strict";
  var seen = {};
  var refreshing = {};

  document.addEventListener("sense:inbound.message", function (event) {
    var frame = event.detail || {};
    if (!window.htmx) return;
    var list = document.querySelector('[data-conversation-contact="' + frame.contact_id + '"]');
    if (list && frame.id && !seen[frame.id] && !document.getElementById("msg-inbound-" + frame.id)) {
      seen[frame.id] = true;
      var url = list.dataset.inboundUrl.replace(/\/0\/$/, "/" + encodeURIComponent(frame.id) + "/");
      window.htmx.ajax("GET", url, { target: list, swap: "afterbegin" }).then(function () {
        var empty = list.querySelector("[data-empty]");
        if (empty) empty.remove();
        var item = document.getElementById("msg-inbound-" + frame.id);
        if (!item) return;
        item.classList.add("fresh");
        document.querySelectorAll("[data-conversation-count]").forEach(function (el) {
          el.textContent = String((parseInt(el.textContent, 10) || 0) + 1);
        });
      });
    }
    if (frame.campaign_id) {
      // A burst of replies refreshes the panel once per half second, not once per reply.
      if (refreshing[frame.campaign_id]) return;
      refreshing[frame.campaign_id] = true;
      setTimeout(function () {
        delete refreshing[frame.campaign_id];
        document.querySelectorAll('[data-replies-campaign="' + frame.campaign_id + '"]').forEach(function (panel) {
          if (panel.dataset.liveRefresh) {
            window.htmx.ajax("GET", panel.dataset.liveRefresh, { target: panel, swap: "outerHTML" });
          }
        });
      }, 500);
    }
  });
})();
