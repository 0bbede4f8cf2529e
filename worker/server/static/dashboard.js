// The dashboard's live parts: no build step, no library. Each view holds one EventSource
// (the session cookie authenticates it) and re-fetches its server-rendered fragment on events.
"use strict";

(function () {
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const status = document.getElementById("live-status");

  function say(text) {
    if (status) status.textContent = text;
  }

  // An EventSource that is recreated with backoff when the server refuses or a proxy fails it for
  // good (a 502 during a deploy closes it; the spec then never reconnects on its own).
  function follow(url, handlers, onReopen) {
    let delay = 1000;
    let source = null;
    let stopped = false;
    function open(target) {
      source = new EventSource(target);
      source.onopen = function () {
        delay = 1000;
        say("Live");
      };
      source.onerror = function () {
        if (stopped || source.readyState !== EventSource.CLOSED) return;
        say("Reconnecting…");
        setTimeout(function () {
          open(onReopen ? onReopen() : target);
        }, delay);
        delay = Math.min(delay * 2, 30000);
      };
      Object.keys(handlers).forEach(function (name) {
        source.addEventListener(name, handlers[name]);
      });
    }
    open(url);
    return {
      close: function () {
        stopped = true;
        source.close();
        say("Finished");
      },
    };
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) {
      window.location.assign("/login");
      throw new Error("logged out");
    }
    if (!response.ok) throw new Error(url + ": " + response.status);
    return response.json();
  }

  function jobsView() {
    const rows = document.getElementById("job-rows");
    const counts = document.getElementById("counts");
    const pager = document.getElementById("pager-wrap");
    let busy = false;
    let again = false;
    async function refresh() {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      try {
        const data = await getJSON("/ui/jobs" + window.location.search);
        counts.innerHTML = data.counts;
        rows.innerHTML = data.rows;
        pager.innerHTML = data.pager;
      } finally {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      }
    }
    follow("/ui/events", { changed: refresh });
  }

  function fleetView() {
    const fleet = document.getElementById("fleet");
    follow("/ui/events", {
      changed: async function () {
        fleet.innerHTML = (await getJSON("/ui/fleet")).fleet;
      },
    });
  }

  function jobView() {
    const root = document.getElementById("job");
    const id = encodeURIComponent(root.dataset.job);
    const doc = document.getElementById("doc");
    const panel = document.getElementById("panel");
    let offset = 0;
    let stateSeen = false;
    const details = document.getElementById("details");
    async function refreshPanel() {
      const data = await getJSON("/ui/jobs/" + id + "/panel");
      panel.innerHTML = data.head;
      details.innerHTML = data.details;
    }
    const stream = follow(
      "/ui/jobs/" + id + "/events",
      {
        text: function (event) {
          const data = JSON.parse(event.data);
          if (data.offset !== offset) return; // a replay we already have
          doc.append(data.text);
          offset += data.text.length;
        },
        state: function (event) {
          // Each (re)connection starts with the state now: no need to redraw what is shown.
          const shown = document.getElementById("job-state");
          if (shown && JSON.parse(event.data).state === shown.textContent && !stateSeen) {
            stateSeen = true;
            return;
          }
          stateSeen = true;
          refreshPanel();
        },
        done: function () {
          stream.close();
          refreshPanel();
        },
      },
      function () {
        return "/ui/jobs/" + id + "/events?offset=" + offset;
      }
    );
    panel.addEventListener("click", async function (event) {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const action = button.dataset.action;
      if (!window.confirm(action === "cancel" ? "Cancel this job?" : "Retry this job?")) return;
      button.disabled = true;
      const response = await fetch("/ui/jobs/" + id + "/" + action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf },
      });
      say(response.ok ? action + ": done" : action + " refused: " + (await response.json()).error);
      await refreshPanel();
      if (action === "retry" && response.ok) window.location.reload();
    });
  }

  const page = document.body.dataset.page;
  if (page === "jobs") jobsView();
  else if (page === "fleet") fleetView();
  else if (page === "job") jobView();
})();
