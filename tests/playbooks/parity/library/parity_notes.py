#!/usr/bin/python
# A tiny module for the parity test: it returns a warning and a deprecation, and can fail
# with a traceback, so that a recorder has task warnings, deprecations and exceptions to record.
from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={"explode": {"type": "bool", "default": False}})
    module.warn("parity: something looks odd")
    module.deprecate("parity: this option goes away", version="9.0.0", collection_name="parity.notes")
    if module.params["explode"]:
        try:
            raise RuntimeError("parity: exploded on purpose")
        except RuntimeError as exc:
            import traceback
            module.fail_json(msg=str(exc), exception=traceback.format_exc())
    module.exit_json(changed=False, noted=True)


if __name__ == "__main__":
    main()
