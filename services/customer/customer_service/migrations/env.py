from customer_service.models import Base
from saga_common.persistence.migrations import run_env

run_env(Base.metadata)
