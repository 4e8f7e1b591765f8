// The action blocks of an approval process's page show only the boxes of the chosen kind.
// Without this script every box shows, and the server uses those of the kind.
(function () {
  function show(block) {
    var kind = block.querySelector("select[name$='-kind']");
    if (!kind) return;
    block.querySelectorAll("[data-for-kind]").forEach(function (group) {
      group.hidden = group.getAttribute("data-for-kind") !== kind.value;
    });
  }
  document.querySelectorAll("fieldset.action-form").forEach(function (block) {
    show(block);
    block.addEventListener("change", function (event) {
      if (event.target.name && event.target.name.slice(-5) === "-kind") show(block);
    });
  });
})();
