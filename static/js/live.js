// Live updates for every page: one WebSocket per tab to /ws/tenant/<id>/.
// Frames: {"type": "campaign.stats", campaign_id, status, stats, preparation, sent_at} and
//         {"type": "media.updated", id, status, thumbnail_url}.
// Elements opt in with data attributes; after a dropped connection the socket reconnects
// with backoff and every [data-live-refresh] fragment is fetched again (htmx).
(function () {
  "use strict";
  var main = document.getElementById("main");
  var tenant = main && main.dataset.tenant;
  if (!tenant || !window.WebSocket) return;

  var delay = 500;
  var everConnected = false;

  function pct(part, total) { return total ? Math.round((1000 * part) / total) / 10 : 0; }

  function fmt(n) { return Number(n).toLocaleString(document.documentElement.lang || undefined); }

  function applyStats(frame) {
    var s = frame.stats || {};
    document.querySelectorAll('[data-campaign="' + frame.campaign_id + '"]').forEach(function (root) {
      root.querySelectorAll("[data-stat]").forEach(function (el) {
        var key = el.dataset.stat;
        if (key in s) el.textContent = fmt(s[key]);
      });
      root.querySelectorAll("[data-rate]").forEach(function (el) {
        var parts = el.dataset.rate.split("/");
        el.textContent = pct(s[parts[0]] || 0, s[parts[1]] || 0).toLocaleString() + "%";
      });
      root.querySelectorAll("[data-bar]").forEach(function (el) {
        var parts = el.dataset.bar.split("/");
        el.style.width = pct(s[parts[0]] || 0, s[parts[1]] || 0) + "%";
      });
      applyPreparation(root, frame.preparation);
      if (frame.status) {
        root.querySelectorAll("[data-campaign-status]").forEach(function (el) {
          if (el.dataset.campaignStatus !== frame.status) {
            el.dataset.campaignStatus = frame.status;
            el.className = "badge status-" + frame.status;
            el.textContent = (window.SENSE_STATUS_LABELS || {})[frame.status] || frame.status;
            // Actions depend on the status: refresh the fragment that holds them.
            var actions = root.querySelector("[data-live-refresh][data-actions]");
            if (actions && window.htmx) refresh(actions);
            // A status change is a line of the campaign's activity log: show it.
            document.querySelectorAll('[data-activity-campaign="' + frame.campaign_id + '"]').forEach(throttledRefresh);
          }
        });
      }
    });
    // An open delivery modal of this campaign, and its delivery log (with the filters and
    // page shown), show their rows again.
    refreshLatest('[data-modal-campaign="' + frame.campaign_id + '"]');
    refreshLatest('[data-deliveries-campaign="' + frame.campaign_id + '"]');
  }

  // The audience snapshot's progress while a started campaign prepares; once it is over the
  // line goes (the actions fragment, which holds it on the campaign page, is fetched again).
  function applyPreparation(root, preparation) {
    root.querySelectorAll("[data-preparation]").forEach(function (el) {
      if (!preparation) {
        el.hidden = true;
        var actions = root.querySelector("[data-live-refresh][data-actions]");
        if (actions && actions.contains(el) && window.htmx) refresh(actions);
        return;
      }
      el.hidden = false;
      el.querySelectorAll("[data-prepared]").forEach(function (n) { n.textContent = fmt(preparation.prepared); });
      if (preparation.total !== null && preparation.total !== undefined) {
        el.querySelectorAll("[data-prepare-total]").forEach(function (n) { n.textContent = fmt(preparation.total); });
        el.querySelectorAll("[data-prepare-bar]").forEach(function (n) {
          n.style.width = Math.min(100, pct(preparation.prepared, preparation.total)) + "%";
        });
      }
    });
  }

  // Frames come coalesced by the server (at most 4 a second per campaign): fetch the fragments
  // matching SELECTOR at once, and if frames arrive while that fetch is in flight, once more
  // when it ends (the latest state always last; never two fetches of one fragment at once).
  // Keyed by selector: the swap replaces the element, the selector finds its successor.
  var inFlight = {};
  function refreshLatest(selector) {
    if (inFlight[selector]) { inFlight[selector].again = true; return; }
    var requests = [];
    document.querySelectorAll(selector).forEach(function (el) {
      var request = refresh(el);
      if (request && request.then) requests.push(request);
    });
    if (!requests.length) return;
    var state = inFlight[selector] = { again: false };
    var done = function () {
      delete inFlight[selector];
      if (state.again) refreshLatest(selector);
    };
    Promise.all(requests).then(done, done);
  }

  function refresh(el) {
    if (!window.htmx || !el.dataset.liveRefresh) return null;
    return window.htmx.ajax("GET", el.dataset.liveRefresh, { target: el, swap: "outerHTML" });
  }

  function applyMedia(frame) {
    document.querySelectorAll('[data-asset="' + frame.id + '"]').forEach(function (el) {
      if (el.dataset.liveRefresh) refresh(el);
      else el.dataset.changed = "1"; // a card still loading (media.js): it refreshes once in
    });
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + "/ws/tenant/" + tenant + "/");
    ws.onopen = function () {
      delay = 500;
      document.documentElement.dataset.live = "on";
      if (everConnected) document.querySelectorAll("[data-live-refresh]").forEach(refresh);
      everConnected = true;
    };
    ws.onmessage = function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame.type === "campaign.stats") applyStats(frame);
      else if (frame.type === "media.updated") applyMedia(frame);
      document.dispatchEvent(new CustomEvent("sense:" + frame.type, { detail: frame }));
    };
    ws.onclose = function (event) {
      document.documentElement.dataset.live = "off";
      if (event.code === 4401 || event.code === 4403) return; // not allowed: do not hammer
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    };
  }
  connect();
})();
