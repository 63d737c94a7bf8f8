// Draws every chart of the page: each <div data-spec="ID"> gets the Vega-Lite specification of
// the JSON script element ID (the data stays data: it is never inserted as HTML).
(function () {
  "use strict";
  var options = { actions: false, renderer: "svg", tooltip: true };
  function draw(el) {
    var spec = JSON.parse(document.getElementById(el.getAttribute("data-spec")).textContent);
    return vegaEmbed(el, spec, options).then(
      function () { el.setAttribute("data-drawn", "true"); },
      function (err) {
        el.textContent = "This chart could not be drawn: " + err.message;
        el.setAttribute("data-drawn", "error");
        console.error(err);
      }
    );
  }
  function drawAll() {
    var all = Array.prototype.slice.call(document.querySelectorAll("[data-spec]"));
    return Promise.all(all.map(draw)).then(function () {
      document.body.setAttribute("data-charts", "drawn");
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();
