"""Dependencies handlers declare by name; ``create_app`` provides them from the container."""

from litestar.di import NamedDependency

from application.messagebus import MessageBus
from application.services import Services

Bus = NamedDependency[MessageBus]
ServicesDep = NamedDependency[Services]
