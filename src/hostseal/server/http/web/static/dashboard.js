// hostseal dashboard: live regions refreshed in place (no page reload), with a spoken and
// visible note of every host whose status changed. Pages opt in with data-live-url on <body>;
// each [data-live-region] is replaced by the region of the same name from that JSON endpoint.
// Regions where someone is typing wait; focus and open <details> survive a replacement.
(function () {
  "use strict";

  var body = document.body;
  var url = body.getAttribute("data-live-url");
  if (!url) {
    return;
  }
  var every = Number(body.getAttribute("data-live-every")) || 3000;
  var changes = document.getElementById("live-changes");
  var state = document.getElementById("live-state");
  var timer = null;

  function statuses() {
    var found = {};
    document.querySelectorAll("[data-host][data-status-word]").forEach(function (el) {
      found[el.getAttribute("data-host")] = {
        word: el.getAttribute("data-status-word"),
        message: el.getAttribute("data-message") || "",
      };
    });
    return found;
  }

  function typing(region) {
    var active = document.activeElement;
    if (!active || !region.contains(active)) {
      return false;
    }
    var tag = active.tagName;
    return (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") && active.value !== "";
  }

  function replace(region, html) {
    var incoming = document.createElement("template");
    incoming.innerHTML = html;
    if (incoming.innerHTML === region.innerHTML) {
      return;
    }
    var active = document.activeElement;
    var focusId = active && region.contains(active) ? active.id : "";
    var open = [];
    region.querySelectorAll("details[id]").forEach(function (d) {
      open.push([d.id, d.open]);
    });
    region.replaceChildren(incoming.content);
    open.forEach(function (pair) {
      var d = document.getElementById(pair[0]);
      if (d && region.contains(d)) {
        d.open = pair[1];
      }
    });
    if (focusId) {
      var again = document.getElementById(focusId);
      if (again) {
        again.focus({ preventScroll: true });
      }
    }
  }

  function announce(before, after) {
    var said = [];
    Object.keys(after).forEach(function (host) {
      var was = before[host];
      var now = after[host];
      if (was && was.word !== now.word) {
        said.push(host + " is now " + now.word + (now.message ? ": " + now.message : ""));
      }
    });
    if (said.length && changes) {
      changes.textContent = said.join(". ") + ".";
    }
  }

  // The page's query, plus the versions of the regions that carry one: the server leaves out
  // those that have not changed (a host's decoded event log is not sent again every 3 s).
  function query() {
    var search = window.location.search;
    var known = [];
    document.querySelectorAll("[data-live-region][data-live-version]").forEach(function (el) {
      known.push(el.getAttribute("data-live-region") + ":" + el.getAttribute("data-live-version"));
    });
    if (!known.length) {
      return search;
    }
    return search + (search ? "&" : "?") + "known=" + encodeURIComponent(known.join(","));
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(poll, every);
  }

  function poll() {
    if (document.hidden) {
      schedule();
      return;
    }
    fetch(url + query(), {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    })
      .then(function (response) {
        if (response.status === 401) {
          state.textContent = "Your session ended: reload the page to log in again.";
          throw new Error("logged out");
        }
        if (!response.ok) {
          throw new Error("status " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        var before = statuses();
        Object.keys(data.regions).forEach(function (name) {
          var region = document.querySelector('[data-live-region="' + name + '"]');
          if (region && !typing(region)) {
            replace(region, data.regions[name]);
            if (data.versions && data.versions[name]) {
              region.setAttribute("data-live-version", data.versions[name]);
            }
          }
        });
        announce(before, statuses());
        var at = new Date().toISOString().slice(11, 19);
        state.textContent = "Updated at " + at + " UTC; this page updates itself.";
        schedule();
      })
      .catch(function (error) {
        if (error.message !== "logged out") {
          state.textContent = "Live updates paused: the server did not answer. Retrying.";
          schedule();
        }
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      poll();
    }
  });
  schedule();
})();
