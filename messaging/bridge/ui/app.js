// Boot UI: drag and drop for the upload form, and live job progress over SSE.
(function () {
  "use strict";
  var drop = document.getElementById("drop");
  if (drop) {
    var file = document.getElementById("file");
    var text = document.getElementById("drop-text");
    var show = function () { if (file.files.length) { text.textContent = file.files[0].name; } };
    file.addEventListener("change", show);
    ["dragenter", "dragover"].forEach(function (t) {
      drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (t) {
      drop.addEventListener(t, function (e) { e.preventDefault(); drop.classList.remove("over"); });
    });
    drop.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files.length) { file.files = e.dataTransfer.files; show(); }
    });
  }
  var job = document.body.getAttribute("data-job");
  if (!job) { return; }
  var list = document.getElementById("events");
  var state = document.getElementById("state");
  var result = document.getElementById("result");
  var add = function (ev) {
    var li = document.createElement("li");
    var parts = [ev.elapsed_seconds.toFixed(3) + "s", ev.step];
    if (ev.service) { parts.push(ev.service); }
    if (ev.status) { parts.push(ev.status); li.className = ev.status; }
    if (ev.message) { parts.push("— " + ev.message); }
    li.textContent = parts.join(" ");
    list.appendChild(li);
    // A network change that waits for an operator: this page reaching the device is
    // the proof, so offer to confirm it (POST /confirm with this page's form token).
    if (confirmForm && ev.step === "confirm") {
      confirmForm.hidden = !(ev.status === "waiting" && ev.service === "operator");
    }
  };
  var confirmForm = document.getElementById("confirm");
  if (confirmForm) {
    confirmForm.addEventListener("submit", function (e) {
      e.preventDefault();
      var err = document.getElementById("confirm-error");
      fetch("/confirm", { method: "POST", body: new URLSearchParams(new FormData(confirmForm)) }).then(function (r) {
        if (r.ok) { confirmForm.hidden = true; return; }
        return r.json().then(function (j) { err.textContent = j.error || ("HTTP " + r.status); err.hidden = false; });
      }).catch(function (x) { err.textContent = String(x); err.hidden = false; });
    });
  }
  var es = new EventSource("/api/jobs/" + encodeURIComponent(job) + "/events");
  es.onmessage = function (m) { add(JSON.parse(m.data)); };
  es.addEventListener("done", function (m) {
    es.close();
    var j = JSON.parse(m.data);
    result.hidden = false;
    result.textContent = "";
    var p = document.createElement("p");
    if (j.state === "succeeded") {
      state.textContent = "Provisioned";
      state.className = "state ok";
      p.textContent = "The device is provisioned. This page is gone now; manage the device with the publisher or the signed API (" + location.host + "/api).";
    } else {
      state.textContent = "Failed";
      state.className = "state bad";
      p.textContent = "The configuration was not applied: " + (j.error || "unknown error") +
        (j.rollback_status ? " (rollback: " + j.rollback_status + ")" : "") + ".";
      var back = document.createElement("a");
      back.href = "/";
      back.textContent = "Try again";
      result.appendChild(p);
      result.appendChild(back);
      return;
    }
    result.appendChild(p);
  });
  es.onerror = function () { state.textContent = "Connection lost; the job goes on. Reload to see it."; };
})();
