"""The local host refuses what the Azure Functions Python worker refuses, with the worker's words.

Each test builds a small app that breaks one rule and indexes it as the host does at start. In Azure one
refused function fails the worker's whole metadata answer: no function runs. So here: `index` raises.
"""

from __future__ import annotations

import typing

import azure.functions as func
import pytest

import function_app
from stack import functions
from stack.functions import FunctionLoadError, Invoker


def queue_app() -> func.FunctionApp:
    return func.FunctionApp()


def refused(app: func.FunctionApp) -> str:
    with pytest.raises(FunctionLoadError) as caught:
        functions.index(app)
    return str(caught.value)


def test_the_real_app_indexes_all_its_functions() -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)  # get_functions() works once per app
    for blueprint in function_app.BLUEPRINTS:
        app.register_functions(blueprint)
    indexed = functions.index(app)
    assert len(indexed) == 20
    assert indexed["model_uploaded"].encoders["jobs"] == ("queue", typing.List[str])  # noqa: UP006


def test_a_builtin_generic_out_annotation_is_refused_as_the_worker_refuses_it() -> None:
    app = queue_app()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    @app.queue_output(arg_name="jobs", queue_name="out", connection="S")
    def model_uploaded(msg: func.QueueMessage, jobs: func.Out[list[str]]) -> None: ...

    assert refused(app) == ("cannot load the model_uploaded function: binding jobs has invalid non-type "
                            "annotation azure.functions._abc.Out[list[str]]")


def test_the_typing_generic_out_annotation_indexes() -> None:
    app = queue_app()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    @app.queue_output(arg_name="jobs", queue_name="out", connection="S")
    def fine(msg: func.QueueMessage, jobs: func.Out[typing.List[str]]) -> None: ...  # noqa: UP006

    assert list(functions.index(app)) == ["fine"]


def test_one_bad_function_fails_the_whole_index() -> None:
    app = queue_app()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    def good(msg: func.QueueMessage) -> None: ...

    @app.queue_trigger(arg_name="msg", queue_name="in2", connection="S")
    @app.queue_output(arg_name="out", queue_name="out", connection="S")
    def bad(msg: func.QueueMessage, out: func.Out[dict]) -> None: ...

    # The SDK leaves dataType unset (None), which the worker tells apart from "undefined" (0): this message.
    assert refused(app) == ("cannot load the bad function: 'out' binding type \"queue\" and dataType \"None\" "
                            "in function.json do not match the corresponding function parameter's Python type "
                            'annotation "dict"')


def test_a_binding_without_a_parameter_is_refused() -> None:
    app = queue_app()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    @app.queue_output(arg_name="jobs", queue_name="out", connection="S")
    def lonely(msg: func.QueueMessage) -> None: ...

    assert refused(app) == ("cannot load the lonely function: the following parameters are declared in "
                            "function.json but not in Python: {'jobs'}")


def test_a_parameter_without_a_binding_is_refused_even_with_a_default() -> None:
    app = queue_app()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    def extra(msg: func.QueueMessage, retries: int = 3) -> None: ...

    assert refused(app) == ("cannot load the extra function: the following parameters are declared in "
                            "Python but not in function.json: {'retries'}")


def test_an_out_binding_must_be_annotated_out_and_an_in_binding_must_not() -> None:
    app = queue_app()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    @app.queue_output(arg_name="jobs", queue_name="out", connection="S")
    def plain(msg: func.QueueMessage, jobs: str) -> None: ...

    assert "binding jobs is declared to have the \"out\" direction" in refused(app)

    app = queue_app()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    def wrapped(msg: func.Out[str]) -> None: ...

    assert "binding msg is declared to have the \"in\" direction" in refused(app)


def test_a_trigger_annotation_its_converter_refuses_is_refused() -> None:
    app = queue_app()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    def numbers(msg: int) -> None: ...

    assert refused(app).endswith("'msg' binding type \"queueTrigger\" and dataType \"None\" in function.json "
                                 "do not match the corresponding function parameter's Python type annotation "
                                 '"int"')


def test_a_return_annotation_its_binding_refuses_is_refused() -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="r")
    def answer(req: func.HttpRequest) -> dict: ...

    assert refused(app) == ('cannot load the answer function: Python return annotation "dict" does not match '
                            'binding type "http"')


def test_an_unresolvable_annotation_is_refused() -> None:
    app = queue_app()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    def ghost(msg: NoSuchType) -> None: ...  # noqa: F821

    assert refused(app) == "cannot load the ghost function: NameError: name 'NoSuchType' is not defined"


# -- invocation ------------------------------------------------------------------------------------------------
class Sent(list):
    def __call__(self, binding, messages) -> None:
        self.append((binding["queueName"], messages))


def invoke(app: func.FunctionApp, name: str) -> Sent:
    sent = Sent()
    Invoker(send_queue=sent).invoke(functions.index(app)[name], func.QueueMessage(body=b"in"))
    return sent


def test_a_value_returned_without_a_return_binding_fails_the_invocation() -> None:
    app = queue_app()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    def chatty(msg: func.QueueMessage):
        return "done"

    with pytest.raises(RuntimeError, match=r"^function 'chatty' without a \$return bindingreturned a non-None"):
        invoke(app, "chatty")


def test_queue_outputs_are_encoded_as_the_sdk_encodes_them() -> None:
    app = queue_app()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    @app.queue_output(arg_name="one", queue_name="one", connection="S")
    @app.queue_output(arg_name="many", queue_name="many", connection="S")
    def fans_out(msg: func.QueueMessage, one: func.Out[str],
                 many: func.Out[typing.List[str]]) -> None:  # noqa: UP006
        one.set("single")
        many.set(["a", "b"])

    assert sorted(invoke(app, "fans_out")) == [("many", [b"a", b"b"]), ("one", [b"single"])]


@pytest.mark.parametrize("item", [b"bytes", {"a": 1}], ids=["bytes", "dict"])
def test_a_list_item_the_sdk_refuses_fails_the_invocation_and_sends_nothing(item) -> None:
    app = queue_app()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="S")
    @app.queue_output(arg_name="one", queue_name="one", connection="S")
    @app.queue_output(arg_name="many", queue_name="many", connection="S")
    def mixed(msg: func.QueueMessage, one: func.Out[str], many: func.Out[typing.List[str]]) -> None:  # noqa: UP006
        one.set("would be sent")
        many.set(["fine", item])

    sent = Sent()
    with pytest.raises(TypeError, match=r'^unable to encode outgoing TypedData: unsupported type ".*Queue'
                                        r'MessageOutConverter.*" for Python type "list"'):
        Invoker(send_queue=sent).invoke(functions.index(app)["mixed"], func.QueueMessage(body=b"in"))
    assert sent == []
