// The console's live tail: deliveries and their results appended as the
// server reports them (server-sent events), with a pause button. Every
// value is set as text, never as markup.
(function () {
  "use strict";
  var body = document.getElementById("tail");
  if (!body || !window.EventSource) {
    return;
  }
  var pause = document.getElementById("tail-pause");
  var status = document.getElementById("tail-status");
  var paused = false;
  var held = [];

  function cell(row, text, href, className) {
    var td = row.insertCell(-1);
    var target = td;
    if (href) {
      target = document.createElement("a");
      target.href = href;
      td.appendChild(target);
    }
    if (className) {
      var code = document.createElement(className === "code" ? "code" : "span");
      if (className !== "code") {
        code.className = className;
      }
      target.appendChild(code);
      target = code;
    }
    target.textContent = text;
    return td;
  }

  function result(line) {
    if (line.status !== null && line.status !== undefined) {
      var text = "HTTP " + line.status + (line.error ? " · " + line.error : "");
      return [text, line.status >= 200 && line.status < 300 ? "ok" : "fail"];
    }
    if (line.error) {
      return [line.error, "fail"];
    }
    return ["queued", "muted"];
  }

  function add(line) {
    var row = body.insertRow(0);
    row.dataset.kind = line.kind;
    row.className = "fresh";
    cell(row, line.at);
    cell(row, line.kind);
    cell(row, line.event_id, "/events/" + encodeURIComponent(line.event_id), "code");
    cell(row, line.event_type, null, "code");
    cell(row, String(line.subscription_id), "/subscriptions/" + line.subscription_id);
    var shown = result(line);
    var td = cell(row, shown[0], null, shown[1]);
    td.appendChild(document.createTextNode(" "));
    var badge = document.createElement("span");
    badge.className = "badge " + line.state;
    badge.textContent = line.state;
    td.appendChild(badge);
    while (body.rows.length > 500) {
      body.deleteRow(-1);
    }
  }

  function show(text) {
    status.textContent = text;
  }

  pause.hidden = false;
  pause.addEventListener("click", function () {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", paused ? "true" : "false");
    if (!paused) {
      held.splice(0).forEach(add);
    }
    show(paused ? "Paused: new lines are held back" : "Live");
  });

  var source = new EventSource("/tail/events");
  source.onopen = function () {
    show(paused ? "Paused: new lines are held back" : "Live");
  };
  source.onerror = function () {
    show("Reconnecting…");
  };
  source.addEventListener("line", function (message) {
    var line = JSON.parse(message.data);
    if (paused) {
      held.push(line);
      show("Paused: " + held.length + " new line" + (held.length === 1 ? "" : "s") + " held back");
    } else {
      add(line);
    }
  });
})();
