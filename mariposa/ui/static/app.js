// The dashboard's own script: none inline (the Content-Security-Policy forbids it).
// Destructive buttons carry hx-confirm (htmx asks with the browser's own dialog); plain forms
// without htmx carry data-confirm, asked here.
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
