"""AWS on the wire, as far as the proxy needs it: who a request is for and
what it asks (SigV4 scope, query or JSON protocol), and error answers in the
shape each service's SDK parses (EC2's <Response><Errors>, the query
protocol's <ErrorResponse>, SQS's JSON with x-amzn-query-error).
"""

import json
import re
import uuid
from email.utils import formatdate
from urllib.parse import parse_qsl, urlencode
from xml.sax.saxutils import escape

CREDENTIAL = re.compile(r"Credential=([^,\s]+)")

# kind -> service -> (HTTP status, error code, message). "*" is any other
# service. Each is what the real service sends; error_answer gives the wire
# form per protocol. A None message is written from the request
# (ice_message, denied_message).
ERRORS = {
    "throttle": {
        "ec2": (503, "RequestLimitExceeded", "Request limit exceeded."),
        "sqs": (400, "RequestThrottled", "Request is throttled."),
        "*": (400, "Throttling", "Rate exceeded"),
    },
    "slowdown": {
        "*": (503, "SlowDown", "Please reduce your request rate."),
    },
    "error500": {
        "ec2": (500, "InternalError", "An internal error has occurred."),
        "*": (500, "InternalFailure", "The request processing has failed "
              "because of an unknown error, exception or failure."),
    },
    "insufficient_capacity": {
        "*": (500, "InsufficientInstanceCapacity", None),
    },
    "access_denied": {
        "ec2": (403, "UnauthorizedOperation",
                "You are not authorized to perform this operation."),
        "*": (403, "AccessDenied", None),
    },
}

# SQS's JSON protocol names modelled errors in its own namespace and the
# rest in Coral's, with the query-protocol code in x-amzn-query-error.
SQS_JSON_TYPES = {
    "RequestThrottled": "com.amazonaws.sqs#RequestThrottled",
    "AccessDenied": "com.amazon.coral.service#AccessDeniedException",
}
IDEMPOTENT_MISMATCH = (400, "IdempotentParameterMismatch",
                       "Arguments on this idempotent request are inconsistent "
                       "with arguments used in previous request(s).")
QUERY_NAMESPACES = {
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sqs": "http://queue.amazonaws.com/doc/2012-11-05/",
}

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "trailers",
              "transfer-encoding", "upgrade", "expect", "content-length"}


class Request:
    """Who an AWS request is for and what it asks: service and region from
    the SigV4 credential scope (header or presigned query), action from the
    query protocol's `Action=` or a JSON protocol's X-Amz-Target, and its
    parameters (form fields, or the JSON body's top level)."""

    def __init__(self, headers, body, query):
        self.service = self.region = None
        scope = CREDENTIAL.search(headers.get("Authorization", ""))
        credential = scope.group(1) if scope else dict(parse_qsl(query)).get("X-Amz-Credential")
        parts = (credential or "").split("/")
        if len(parts) == 5 and parts[4] == "aws4_request":
            self.region, self.service = parts[2], parts[3]
        target = headers.get("X-Amz-Target")
        self.content_type = headers.get("Content-Type", "")
        self.json_protocol = bool(target) or "amz-json" in self.content_type
        if self.json_protocol:
            self.params = json_object(body)
            self.action = target.rsplit(".", 1)[-1] if target else None
        else:
            self.params = form_fields(body, self.content_type, query)
            self.action = self.params.get("Action")

    def with_form_fields(self, body, **values):
        """The form body with those fields set (query protocol, form-encoded
        bodies only; otherwise the body unchanged)."""
        if self.json_protocol or "x-www-form-urlencoded" not in self.content_type:
            return body
        fields = [(k, v) for k, v in parse_qsl(body.decode("utf-8"), keep_blank_values=True)
                  if k not in values]
        return urlencode(fields + [(k, str(v)) for k, v in values.items()]).encode()


def form_fields(body, content_type, query):
    """The query-protocol parameters (form body, else the query string)."""
    if body and "x-www-form-urlencoded" in content_type:
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return {}
    return dict(parse_qsl(query, keep_blank_values=True))


def json_object(body):
    """A JSON-protocol body as a dict ({} if it is not an object)."""
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def ice_message(params, region):
    """EC2's InsufficientInstanceCapacity text, spot or on-demand."""
    if params.get("InstanceMarketOptions.MarketType") == "spot":
        return "There is no Spot capacity available that matches your request."
    kind = params.get("InstanceType", "t2.small")
    zone = params.get("Placement.AvailabilityZone") or f"{region or 'us-east-1'}a"
    return (f"We currently do not have sufficient {kind} capacity in the "
            f"Availability Zone you requested ({zone}). Our system will be "
            f"working on provisioning additional capacity. You can currently "
            f"get {kind} capacity by not specifying an Availability Zone in "
            f"your request or choosing a different Availability Zone.")


def denied_message(service, action, params):
    """IAM's refusal text, naming the action and the role or queue."""
    resource = params.get("RoleArn") or params.get("QueueUrl") or "*"
    return (f"User: arn:aws:iam::123456789012:user/testing is not authorized "
            f"to perform: {service}:{action} on resource: {resource}")


def service_error(kind, request):
    """(status, code, message) the real service sends for an error KIND."""
    table = ERRORS[kind]
    status, code, message = table.get(request.service, table["*"])
    if message is None and kind == "insufficient_capacity":
        message = ice_message(request.params, request.region)
    elif message is None:
        message = denied_message(request.service, request.action, request.params)
    return status, code, message


def error_answer(service, json_protocol, status, code, message):
    """(status, headers, body) of an error in the shape the service's SDK
    parses: EC2's <Response><Errors>, the query protocol's <ErrorResponse>,
    or SQS's JSON with the query code in x-amzn-query-error."""
    request_id = str(uuid.uuid4())
    party = "Sender" if status < 500 else "Receiver"
    headers = [("x-amzn-RequestId", request_id), ("Date", formatdate(usegmt=True))]
    if json_protocol:
        prefix = "com.amazonaws.sqs#" if service == "sqs" else "com.amazon.coral.service#"
        body = {"__type": SQS_JSON_TYPES.get(code, prefix + code), "message": message}
        headers += [("Content-Type", "application/x-amz-json-1.0"),
                    ("x-amzn-query-error", f"{code};{party}")]
        return status, headers, json.dumps(body).encode()
    headers.append(("Content-Type", "text/xml;charset=UTF-8"))
    if service == "ec2":
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
               f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
               f"</Error></Errors><RequestID>{request_id}</RequestID></Response>")
    else:
        namespace = QUERY_NAMESPACES.get(service, "https://amazonaws.com/doc/")
        xml = (f'<ErrorResponse xmlns="{namespace}">\n  <Error>\n'
               f"    <Type>{party}</Type>\n    <Code>{escape(code)}</Code>\n"
               f"    <Message>{escape(message)}</Message>\n  </Error>\n"
               f"  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n")
    return status, headers, xml.encode()


def kind_answer(kind, request):
    """(status, headers, body): the service's own answer for an error KIND."""
    return error_answer(request.service, request.json_protocol, *service_error(kind, request))


def hop_by_hop(headers):
    """Lower-case names not to pass on: RFC 9110's hop-by-hop set, those the
    Connection header lists, and the framing the proxy redoes itself."""
    listed = {h.strip().lower() for v in headers.get_all("Connection") or []
              for h in v.split(",")}
    return HOP_BY_HOP | listed
